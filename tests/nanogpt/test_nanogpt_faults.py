"""Faults in the nanogpt recipe (impossible configs: test_nanogpt_config.py): clear errors for missing, empty or
malformed data files, and non-finite steps skipped, counted, logged, then stopped with a checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nanogpt.data.loader import TokenBatches, read_meta
from nanogpt.train import train
from sparse_core.train import CheckpointError, CheckpointManager, TrainingDiverged, read_jsonl

RUN = "tiny-2by4-stdlib_char"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_empty_and_malformed_data_files(stdlib_char, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*meta.json not found.*prepare"):
        read_meta(tmp_path / "nowhere")
    data = _copy(stdlib_char, tmp_path / "data")
    (data / "meta.json").write_text('{"vocab_size": 6')  # cut mid-write
    with pytest.raises(ValueError, match=r"meta.json is not valid JSON"):
        read_meta(data)
    (data / "meta.json").write_text(json.dumps({"tokenizer": "char"}))
    with pytest.raises(ValueError, match=r"meta.json needs an int vocab_size"):
        read_meta(data)
    args = dict(block_size=8, batch_size=2, micro_batches=1, seed=0)
    (data / "train.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"train.bin holds 0 bytes.*empty or truncated"):
        TokenBatches(data / "train.bin", **args)
    (data / "train.bin").write_bytes(b"\x01\x00" * 50 + b"\x01")  # odd length: cut in the middle of a token
    with pytest.raises(ValueError, match=r"train.bin holds 101 bytes"):
        TokenBatches(data / "train.bin", **args)
    (data / "train.bin").write_bytes(b"\x01\x00" * 5)
    with pytest.raises(ValueError, match=r"train.bin holds 5 tokens, too few"):
        TokenBatches(data / "train.bin", **args)
    (data / "train.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"train.bin not found"):
        TokenBatches(data / "train.bin", **args)


def test_nonfinite_steps_are_skipped_counted_and_logged(stdlib_char, tmp_path, micro_config, monkeypatch) -> None:
    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@2:2")
    cfg = micro_config(stdlib_char, tmp_path, "train.max_steps=6", "train.ckpt_interval=3", "log.plots=false")
    last = train(cfg)
    assert last["train/skipped_steps"] == 2.0 and last["train/consecutive_skipped"] == 0.0
    rows = {r["step"]: r for r in read_jsonl(tmp_path / RUN / "metrics.jsonl") if "train/loss" in r}
    assert [rows[s]["train/skipped"] for s in range(1, 7)] == [0, 0, 1, 1, 0, 0]
    assert math.isnan(rows[3]["train/loss"]) and math.isfinite(rows[5]["train/loss"])
    step, state = CheckpointManager(tmp_path / RUN / "ckpt").load_latest()
    assert step == 6 and state["guard"] == {"total": 2, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_k_bad_steps_in_a_row_stop_with_checkpoint(stdlib_char, tmp_path, micro_config, monkeypatch) -> None:
    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@3:100")
    cfg = micro_config(stdlib_char, tmp_path, "train.max_steps=20", "train.max_bad_steps=3", "log.plots=false")
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    msg = str(info.value)
    path = CheckpointManager(tmp_path / RUN / "ckpt").path_for(6)
    assert "3 optimizer steps in a row (steps 3..5)" in msg and f"checkpoint {path} of step 6" in msg
    assert "lower learning rate" in msg and "resume=auto" in msg
    step, state = CheckpointManager(tmp_path / RUN / "ckpt").load_latest()
    assert step == 6 and state["guard"] == {"total": 3, "consecutive": 0} and state["data"]["position"] == 6
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_cli_divergence_exits_1_with_explanation(stdlib_char, tmp_path, micro_overrides, repo) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPARSE_CORE_FAULT": "nan_loss@0:100"}
    args = [*micro_overrides, f"data.dir={stdlib_char}", f"out_dir={tmp_path}", "train.max_steps=10",
            "train.max_bad_steps=2", "log.plots=false"]
    proc = subprocess.run([sys.executable, "-m", "nanogpt.train", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "training stopped: training diverged: 2 optimizer steps in a row (steps 0..1)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert CheckpointManager(tmp_path / RUN / "ckpt").load_latest()[0] == 2


def test_corrupt_newest_checkpoint_falls_back_then_refuses(stdlib_char, tmp_path, micro_config, capsys) -> None:
    args = ("train.ckpt_interval=2", "log.plots=false")
    train(micro_config(stdlib_char, tmp_path, "train.max_steps=6", *args))
    ckpt = CheckpointManager(tmp_path / RUN / "ckpt")
    newest = ckpt.path_for(6)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern: the sha256 no longer matches the manifest
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*ckpt_00000006.pt: sha256"):
        train(micro_config(stdlib_char, tmp_path, "train.max_steps=8", *args))
    assert "resuming at step 4" in capsys.readouterr().err
    for path in ckpt.directory.glob("ckpt_*.pt"):
        path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        train(micro_config(stdlib_char, tmp_path, "train.max_steps=10", *args))
