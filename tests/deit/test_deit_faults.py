"""Faults in the DeiT recipe (impossible configs: test_deit_config.py): clear errors for missing, empty or
malformed data, and non-finite steps skipped, counted, logged, then stopped with a checkpoint."""

import math

import numpy as np
import pytest
import torch

from deit.config import DataConfig, DeiTConfig
from deit.data import build_datasets, load_npz
from deit.train import CONFIG_DIR, train
from sparse_core.train import CheckpointManager, TrainingDiverged, read_jsonl
from sparse_core.train.config import load_config


def test_empty_image_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"need <class>/<image> folders with images in them: Found no valid file"):
        build_datasets(DataConfig(source="imagefolder", path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"is not a file"):
        build_datasets(DataConfig(source="npz", path=str(tmp_path / "missing.npz")))


def _arrays(n_train=8, n_labels=8):
    return dict(x_train=np.zeros((n_train, 8, 8, 3), np.uint8), y_train=np.zeros(n_labels, np.int64),
                x_test=np.zeros((2, 8, 8, 3), np.uint8), y_test=np.zeros(2, np.int64))


@pytest.mark.parametrize("write, needle", [
    (lambda p: p.write_bytes(b"not a zip at all"), "not a readable .npz"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 20), "not a readable .npz"),  # a cut-off zip
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), "single array"),
    (lambda p: np.savez(open(p, "wb"), **_arrays(n_labels=7)), "one label per image"),
    (lambda p: np.savez(open(p, "wb"), **_arrays(n_train=0, n_labels=0)), "x_train holds no images"),
    (lambda p: np.savez(open(p, "wb"), x_train=np.zeros((2, 8, 8, 3), np.uint8)), "missing arrays"),
])
def test_malformed_npz_names_the_file(tmp_path, write, needle):
    path = tmp_path / "data.npz"
    write(path)
    with pytest.raises(ValueError, match=needle) as info:
        load_npz(path)
    assert str(path) in str(info.value)


COMMON = ["batch_size=16", "data.source=npz", "data.img_size=16", "model.embed_dim=32", "model.depth=1",
          "model.num_heads=2", "optim.epochs=2", "optim.warmup_epochs=1", "eval_interval=100", "log_interval=1",
          "ckpt_interval=100", "max_steps=6"]


def _cfg(tmp_path, *extra):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
             y_train=rng.integers(0, 4, 64), x_test=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
             y_test=rng.integers(0, 4, 16))
    return load_config(DeiTConfig, CONFIG_DIR, "tiny", COMMON + [f"data.path={tmp_path / 'images.npz'}",
                                                                  f"out_dir={tmp_path}", *extra])


def test_nonfinite_steps_skipped_counted_then_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@1")
    train(_cfg(tmp_path, "run_name=one_bad"))
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "one_bad" / "metrics.jsonl") if "train/loss" in r}
    assert [rows[s]["train/skipped"] for s in range(1, 7)] == [0, 1, 0, 0, 0, 0]
    assert math.isnan(rows[2]["train/loss"]) and rows[6]["train/skipped_steps"] == 1.0
    assert CheckpointManager(tmp_path / "one_bad" / "ckpt").load_latest()[1]["guard"] == {"total": 1, "consecutive": 0}

    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@2:100")
    with pytest.raises(TrainingDiverged, match=r"(?s)2 optimizer steps in a row \(steps 2..3\).*ckpt_00000004.pt"):
        train(_cfg(tmp_path, "run_name=diverged", "max_bad_steps=2"))
    step, state = CheckpointManager(tmp_path / "diverged" / "ckpt").load_latest()
    assert step == 4 and state["guard"] == {"total": 2, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values())
