"""`deit/start.sh` end to end: the default run (digits, CPU) with a short override, and DATA=<npz>."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from sparse_core.train.checkpoint import CheckpointManager
from sparse_core.train.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[2]
SHORT = ["max_steps=4", "eval_interval=2", "log_interval=1", "ckpt_interval=2", "batch_size=16", "data.img_size=16",
         "model.embed_dim=32", "model.depth=2", "model.num_heads=2"]


def _start(tmp_path, env_extra: dict[str, str], args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(["bash", str(REPO / "deit" / "start.sh"), *args, f"out_dir={tmp_path}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_default_run(tmp_path):
    out = _start(tmp_path, {}, SHORT)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "tiny"
    records = read_jsonl(run / "metrics.jsonl")
    assert {r["step"] for r in records if "val/top1" in r} == {2, 4}
    assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)
    assert any("sparse/flip_rate" in r for r in records)  # the default method is 2by4
    step, state = CheckpointManager(run / "ckpt").load_latest()
    assert step == 4 and state["config"]["method"] == "2by4" and state["config"]["data"]["source"] == "digits"
    assert json.loads((run / "config.json").read_text())["max_steps"] == 4
    for png in ("loss", "top1", "flip_rate"):
        assert (run / "plots" / f"{png}.png").stat().st_size > 0


def test_data_variable_and_bad_values(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "small.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (8, 12, 12, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 8))
    out = _start(tmp_path, {"DATA": str(npz), "METHOD": "ste"},
                 SHORT + ["max_steps=2", "run_name=npz", "optim.opt=lion"])
    assert out.returncode == 0, out.stderr[-3000:]
    step, state = CheckpointManager(tmp_path / "npz" / "ckpt").load_latest()
    assert (step, state["config"]["method"], state["config"]["data"]["source"]) == (2, "ste", "npz")
    assert state["config"]["optim"]["opt"] == "lion" and "exp_avg" in state["optimizer"]["state"][0]
    assert state["meta"]["num_classes"] == 3

    bad = _start(tmp_path, {"DATA": str(tmp_path / "nowhere")}, [])
    assert bad.returncode == 2 and "DATA=" in bad.stderr
    bad = _start(tmp_path, {"METHOD": "nope"}, SHORT)
    assert bad.returncode != 0 and "method" in bad.stderr


def test_ngpu_must_be_a_number(tmp_path):
    out = _start(tmp_path, {"NGPU": "two"}, [])
    assert out.returncode == 2 and "NGPU" in out.stderr


def test_cifar_roots_follow_the_config(tmp_path):
    """A CIFAR config names its set (a root holding both sets, or none yet with data.download=true); another config
    takes the set the root holds, and a root with both is refused. `python` is a stub printing its arguments."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\necho "ARGS: $*"\n')
    (stub / "python").chmod(0o755)
    root = tmp_path / "cifar"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-100-python").mkdir()
    env = {"PATH": f"{stub}{os.pathsep}{os.environ['PATH']}", "DATA": str(root)}
    out = _start(tmp_path, {**env, "CONFIG": "cifar100"}, [])
    assert out.returncode == 0 and "--config-name cifar100" in out.stdout, out.stderr
    assert "data.source=" not in out.stdout and f"data.path={root}" in out.stdout
    both = _start(tmp_path, {**env, "CONFIG": "tiny"}, [])
    assert both.returncode == 2 and "CIFAR-10 and CIFAR-100" in both.stderr
    new_root = tmp_path / "empty"
    first = _start(tmp_path, {**env, "CONFIG": "cifar10", "DATA": str(new_root)}, ["data.download=true"])
    assert first.returncode == 0 and f"data.path={new_root}" in first.stdout and "data.download=true" in first.stdout
    (root / "cifar-100-python").rmdir()
    one = _start(tmp_path, {**env, "CONFIG": "tiny"}, [])
    assert one.returncode == 0 and "data.source=cifar10 " in one.stdout
