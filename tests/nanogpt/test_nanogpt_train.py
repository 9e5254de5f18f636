"""The training loop: exact resume, DDP (gloo, 2 processes) equal to 1 process, CUDA-graph replay, and start.sh
end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from nanogpt.train import train
from sparse_core.train import CheckpointError, ConfigError, load_checkpoint, read_jsonl
from state_compare import assert_same

RESUME = ("method=2by4", "train.max_steps=8", "train.grad_accum=2", "train.eval_interval=4",
          "train.ckpt_interval=100", "model.dropout=0.1", "sparse.mask_refresh_interval=2",
          "sparse.warmup_steps=4", "log.plots=false")


def test_resume_is_exact(stdlib_char, tmp_path, micro_config) -> None:
    """8 steps straight == 4 steps, stop, resume=auto, 4 steps: MVUE draws, dropout, mask refresh,
    the lambda rule and the dense switch (at step 7) all included."""
    train(micro_config(stdlib_char, tmp_path / "straight", *RESUME))
    first = train(micro_config(stdlib_char, tmp_path / "split", *RESUME, "train.stop_at=4"))
    assert "val/loss" in first  # evaluated at step 4, then stopped with a checkpoint
    train(micro_config(stdlib_char, tmp_path / "split", *RESUME))  # resume=auto is the default
    run = "tiny-2by4-stdlib_char"
    assert sorted(p.name for p in (tmp_path / "split" / run / "ckpt").glob("*.pt")) == [
        "ckpt_00000004.pt", "ckpt_00000008.pt"]
    _, a = load_checkpoint(tmp_path / "straight" / run / "ckpt" / "ckpt_00000008.pt")
    _, b = load_checkpoint(tmp_path / "split" / run / "ckpt" / "ckpt_00000008.pt")
    for key in ("model", "optimizer", "controller", "data", "rng"):
        assert_same(a[key], b[key], key)
    assert a["controller"]["dense"] is True and a["data"]["position"] == 8
    losses = [{r["step"]: r["train/loss"] for r in read_jsonl(tmp_path / d / run / "metrics.jsonl") if "train/loss" in r}
              for d in ("straight", "split")]
    assert losses[0] == losses[1]
    with pytest.raises(CheckpointError, match="already holds checkpoints"):  # a fresh run would lose them
        train(micro_config(stdlib_char, tmp_path / "straight", *RESUME, "resume=never"))


def test_cuda_graph_needs_one_cuda_process(stdlib_char, tmp_path, micro_config) -> None:
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(ConfigError, match="one CUDA process"):
        train(micro_config(stdlib_char, tmp_path, "train.cuda_graph=true", "train.max_steps=2"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_trains_like_eager(stdlib_char, tmp_path, micro_config) -> None:
    """Graph replay of each micro-step gives the eager losses (no MVUE, no dropout: the capture's warm-up
    passes draw no randomness that matters), through mask refreshes and a recapture at the dense switch."""
    args = ("method=2by4", "sparse.mvue=false", "model.dropout=0.0", "model.n_embd=64", "model.block_size=64",
            "train.max_steps=8", "train.grad_accum=2", "train.eval_interval=8", "sparse.dense_ft_fraction=0.75",
            "sparse.lambda_w=6e-5", "log.plots=false", "device=cuda")
    losses = []
    for name, graph in (("eager", "false"), ("graph", "true")):
        train(micro_config(stdlib_char, tmp_path / name, *args, f"train.cuda_graph={graph}"))
        run = next((tmp_path / name).iterdir())
        losses.append([r["train/loss"] for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r])
    assert len(losses[0]) == len(losses[1]) == 8
    assert torch.allclose(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-3, atol=1e-3), losses


def _torchrun(args: list[str], repo, nproc: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "nanogpt.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(launcher + args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def micro_config_from(args: list[str], out_dir):
    """The config the CLI would build from `args`, for the in-process one-process run."""
    from nanogpt.config import CONFIG_DIR, TrainConfig
    from sparse_core.train import load_config

    return load_config(TrainConfig, CONFIG_DIR, "tiny", [*args, f"out_dir={out_dir}"])


def test_ddp_two_processes_equal_one(stdlib_char, tmp_path, micro_overrides, repo) -> None:
    """Same global batch (grad_accum 4 = 2 processes x 2 micro-batches): same losses and weights."""
    args = [*micro_overrides, "method=sr-ste", "train.max_steps=3", "train.grad_accum=4", "train.eval_interval=3",
            "train.warmup_steps=1", "sparse.mask_refresh_interval=1", "log.plots=false", f"data.dir={stdlib_char}"]
    train(micro_config_from(args, tmp_path / "one"))
    _torchrun([*args, f"out_dir={tmp_path / 'two'}"], repo, nproc=2)
    run = "tiny-sr-ste-stdlib_char"
    _, one = load_checkpoint(tmp_path / "one" / run / "ckpt" / "ckpt_00000003.pt")
    _, two = load_checkpoint(tmp_path / "two" / run / "ckpt" / "ckpt_00000003.pt")
    assert len(one["rng"]) == 1 and len(two["rng"]) == 2
    for name, w in one["model"].items():
        assert torch.allclose(w.float(), two["model"][name].float(), rtol=1e-4, atol=1e-5), name
    logs = [read_jsonl(tmp_path / d / run / "metrics.jsonl") for d in ("one", "two")]
    for r1, r2 in zip(logs[0], logs[1], strict=True):
        for key in ("train/loss", "val/loss", "sparse/flip_rate"):
            if key in r1:
                assert abs(r1[key] - r2[key]) < 1e-4, (key, r1, r2)


def test_start_sh_default_run_end_to_end(tmp_path, repo) -> None:
    """The README's main job with a short step count: prepares the stdlib corpus, trains the tiny
    2by4 GPT-2, writes checkpoints, metrics.jsonl and PNG plots, shows a progress bar."""
    env = {**os.environ, "DATA_ROOT": str(tmp_path / "data")}
    proc = subprocess.run(
        ["bash", "nanogpt/start.sh", "train.max_steps=4", "train.warmup_steps=2", "train.eval_interval=2",
         "train.eval_iters=2", "train.ckpt_interval=2", "train.log_interval=2", "sparse.mask_refresh_interval=2",
         f"out_dir={tmp_path / 'out'}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "out" / "tiny-2by4-stdlib_char"
    assert (tmp_path / "data" / "stdlib_char" / "train.bin").is_file()
    assert sorted(p.name for p in (run / "ckpt").glob("*.pt")) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [2, 4]
    assert [r["step"] for r in records if "val/loss" in r] == [2, 4]
    assert any(k == "sparse/flip_rate/h.0.mlp.c_fc" for r in records for k in r)  # per-layer flip rates
    for png in ("loss.png", "lr.png", "flip_rate.png", "flip_rate_per_layer.png"):
        assert (run / "plots" / png).stat().st_size > 1000, png
    assert "4/4" in proc.stderr and "loss=" in proc.stderr  # the tqdm bar with its postfix
