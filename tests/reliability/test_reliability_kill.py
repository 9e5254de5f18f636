"""kill -9 and pre-emption through the real recipes' CLIs, in subprocesses.

nanogpt: one run is SIGKILLed five times, once in each phase (forward, backward, optimizer step, checkpoint
file write, between the checkpoint's rename and the manifest update), at steps drawn from a seeded
generator (SPARSE_CORE_FAULT_SEED), then SIGTERMed, and resumed with resume=auto after each; after every
crash each checkpoint on disk verifies, at most one checkpoint interval is lost, and the final weights,
optimizer, controller, data position and RNG equal those of an uninterrupted run bit for bit.
deit and cramming: one SIGKILL and one SIGTERM/SIGINT each, the same checks.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from reliability_util import SEED, check_after_crash, fault_rng, final_state, run_recipe
from state_compare import assert_same

PHASES = ("kill_forward", "kill_backward", "kill_optimizer", "kill_checkpoint", "kill_manifest")


def _plan(rng, steps: int, interval: int, phases: tuple[str, ...]) -> list[tuple[str, int]]:
    """One (phase, step) per window of `interval` steps, the phases shuffled: strictly later each time, so
    every fault fires in the run resumed after the previous one. Checkpoint faults name the checkpoint."""
    order = list(phases)
    rng.shuffle(order)
    plan = []
    for window, phase in enumerate(order):
        first = window * interval
        assert first + interval <= steps, "not enough windows for the phases"
        if phase in ("kill_checkpoint", "kill_manifest"):
            plan.append((phase, first + interval))  # the checkpoint written at the end of the window
        else:
            plan.append((phase, rng.randrange(first, first + interval)))
    return plan


def _kill_and_resume(module: str, args: list[str], ckpt_dir: Path, plan: list[tuple[str, int]], interval: int,
                     log: list[str]) -> None:
    for kind, step in plan:
        proc = run_recipe(module, args, fault=f"{kind}@{step}")
        log.append(f"{module} {kind}@{step}: exit {proc.returncode}")
        if kind in ("sigterm", "sigint"):
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"pre-empted by {kind.upper()} at step {step + 1}; checkpoint " in proc.stderr
            assert "resume with the same command plus resume=auto" in proc.stderr
            assert check_after_crash(ckpt_dir) == step + 1
            continue
        assert proc.returncode == -9, f"{kind}@{step} did not kill the run:\n{proc.stderr[-3000:]}"
        assert f"injecting {kind} at" in proc.stderr
        newest = check_after_crash(ckpt_dir)  # `step` steps were done when it died
        assert step - interval <= newest <= step, f"{kind}@{step}: newest checkpoint {newest}"
        if kind == "kill_checkpoint":
            assert newest == step - interval and list(ckpt_dir.glob(".tmp_*")), "the torn file must not be newest"
        if kind == "kill_manifest":
            assert newest == step  # renamed in whole before the kill: usable


@pytest.fixture(scope="module")
def char_data(tmp_path_factory) -> Path:
    from nanogpt.data.prepare import prepare

    root = tmp_path_factory.mktemp("nanogpt_data")
    words = np.random.default_rng(0).choice(["sparse ", "dense ", "mask ", "flip ", "step\n", "grad "], 6000)
    (root / "corpus.txt").write_text("".join(words))
    return prepare(str(root / "corpus.txt"), root, "char")


NANO_STEPS, NANO_INTERVAL = 24, 4
NANO = ["--config-name", "tiny", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
        "model.dropout=0.1", "data.batch_size=4", "train.grad_accum=2", f"train.max_steps={NANO_STEPS}",
        "train.warmup_steps=2", "train.eval_iters=2", "train.eval_interval=6", "train.log_interval=1",
        f"train.ckpt_interval={NANO_INTERVAL}", "method=2by4", "sparse.mask_refresh_interval=2",
        "sparse.warmup_steps=4", "log.wandb=disabled", "log.progress=false", "log.plots=false", "device=cpu"]


def test_nanogpt_survives_sigkill_in_every_phase_and_sigterm(char_data, tmp_path):
    args = NANO + [f"data.dir={char_data}", f"out_dir={tmp_path}"]
    straight = run_recipe("nanogpt.train", args + ["run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]

    rng = fault_rng("nanogpt")
    plan = _plan(rng, NANO_STEPS - NANO_INTERVAL, NANO_INTERVAL, PHASES)  # 5 windows of 4 steps
    plan.append(("sigterm", rng.randrange(plan[-1][1] + 1, NANO_STEPS)))
    log: list[str] = [f"seed {SEED}: plan {plan}"]
    ckpt_dir = tmp_path / "crashed" / "ckpt"
    _kill_and_resume("nanogpt.train", args + ["run_name=crashed"], ckpt_dir, plan, NANO_INTERVAL, log)
    resumed = run_recipe("nanogpt.train", args + ["run_name=crashed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step" in resumed.stderr
    print("\n".join(log))

    a, b = final_state(tmp_path / "straight" / "ckpt", NANO_STEPS), final_state(ckpt_dir, NANO_STEPS)
    for key in ("model", "optimizer", "controller", "data", "guard", "scaler"):
        assert_same(a[key], b[key], key)
    # the torch stream (MVUE, dropout) continues exactly; python's and numpy's global streams, which nanogpt
    # never draws from, start from OS entropy in each process
    assert_same(a["rng"][0]["torch"], b["rng"][0]["torch"], "rng.torch")
    assert a["controller"]["dense"] is True and a["data"]["position"] == NANO_STEPS  # dense fine-tuning reached


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (96, 16, 16, 3), dtype=np.uint8), y_train=rng.integers(0, 4, 96),
             x_test=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), y_test=rng.integers(0, 4, 16))
    return path


DEIT = ["--config-name", "tiny", "batch_size=16", "data.source=npz", "data.img_size=16", "model.embed_dim=32",
        "model.depth=1", "model.num_heads=2", "model.drop_path=0.1", "aug.mixup=0.8", "sparse.mask_refresh_interval=2",
        "optim.epochs=3", "optim.warmup_epochs=1", "max_steps=12", "eval_interval=100", "log_interval=1",
        "ckpt_interval=3", "device=cpu", "dtype=float32"]


def test_deit_survives_sigkill_and_sigterm(tmp_path):
    args = DEIT + [f"data.path={_npz(tmp_path / 'images.npz')}", f"out_dir={tmp_path}"]
    straight = run_recipe("deit.train", args + ["run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    rng = fault_rng("deit")
    plan = [(rng.choice(PHASES[:3]), rng.randrange(1, 6)), ("sigterm", rng.randrange(6, 11))]
    log = [f"seed {SEED}: plan {plan}"]
    _kill_and_resume("deit.train", args + ["run_name=crashed"], tmp_path / "crashed" / "ckpt", plan, 3, log)
    resumed = run_recipe("deit.train", args + ["run_name=crashed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    print("\n".join(log))
    a, b = final_state(tmp_path / "straight" / "ckpt", 12), final_state(tmp_path / "crashed" / "ckpt", 12)
    a["config"]["run_name"] = b["config"]["run_name"]
    assert_same(a, b, "checkpoint")


def test_cramming_survives_sigkill_and_sigint(tmp_path):
    from cramming.data import stdlib_docstrings
    from cramming.tokenizer import train_wordpiece

    # one tokenizer for both runs: `tokenizers` breaks count ties differently from run to run
    train_wordpiece(itertools.islice(stdlib_docstrings(), 300), vocab_size=256).save(tmp_path / "tok")
    args = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
            "model.max_position=32", "data.seq_len=32", "data.max_chars=40000", f"data.tokenizer={tmp_path / 'tok'}",
            "optim.batch_size=8", "optim.micro_batch_size=4", "progress=false", "eval_interval=0", "method=2by4",
            "budget.steps=12", "log_interval=2", "checkpoint_interval=3", "sparse.warmup_steps=2", "device=cpu",
            f"out_dir={tmp_path}"]
    straight = run_recipe("cramming.train", args + ["run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    rng = fault_rng("cramming")
    plan = [(rng.choice(PHASES[:3]), rng.randrange(1, 6)), ("sigint", rng.randrange(6, 11))]
    log = [f"seed {SEED}: plan {plan}"]
    ckpt_dir = tmp_path / "crashed" / "checkpoints"
    _kill_and_resume("cramming.train", args + ["run_name=crashed"], ckpt_dir, plan, 3, log)
    resumed = run_recipe("cramming.train", args + ["run_name=crashed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    print("\n".join(log))
    a, b = final_state(tmp_path / "straight" / "checkpoints", 12), final_state(ckpt_dir, 12)
    for key in ("model", "optimizer", "sparse", "guard"):
        assert_same(a[key], b[key], key)
    assert_same(a["rng"][0]["torch"], b["rng"][0]["torch"], "rng.torch")  # cramming never draws from python/numpy
