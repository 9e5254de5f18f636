"""Training metrics of the DeiT recipe: images/s counts training time only."""

import numpy as np

import deit.train as recipe
from clock_testutil import make_slow
from deit.config import DeiTConfig
from sparse_core.train.config import load_config
from sparse_core.train.metrics import read_jsonl


def test_images_per_second_leave_out_evaluation_and_checkpoints(tmp_path, monkeypatch):
    """Every evaluation takes 1000 s of a fake clock: no logged images/s window may carry it."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
             y_train=rng.integers(0, 4, 64), x_test=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
             y_test=rng.integers(0, 4, 16))
    make_slow(monkeypatch, recipe, "evaluate")
    overrides = ["batch_size=16", "data.source=npz", f"data.path={tmp_path / 'images.npz'}", "data.img_size=16",
                 "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "max_steps=6", "log_interval=2",
                 "eval_interval=2", "ckpt_interval=2", f"out_dir={tmp_path}", "run_name=ips"]
    recipe.train(load_config(DeiTConfig, recipe.CONFIG_DIR, "tiny", overrides))
    rates = [r["train/images_per_s"] for r in read_jsonl(tmp_path / "ips" / "metrics.jsonl") if "train/images_per_s" in r]
    assert len(rates) == 3 and min(rates) > 2 * 16 / 100.0  # 2 steps of 16 images took far less than 100 s
