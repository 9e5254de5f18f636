"""DeiT resume exactness on CPU: N steps straight == N/2, stop, resume, N/2 (torch.equal on everything).

The run exercises every source of randomness: RandAugment/erasing (per-sample seeded), mixup+cutmix
(numpy), drop-path (torch), MVUE (torch), an epoch boundary inside a grad-accumulation step, EMA,
and loader workers in the resumed run only (the order and augmentation must not depend on them).
The same holds on 2 gloo ranks, each of which must continue its own random streams.
"""

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from deit.config import DeiTConfig
from deit.train import CONFIG_DIR, train
from sparse_core.train.checkpoint import CheckpointError, load_checkpoint
from sparse_core.train.config import load_config
from state_compare import assert_same
from dist_testutil import free_port

COMMON = ["batch_size=16", "grad_accum=2", "data.source=npz", "data.img_size=16", "model.embed_dim=32",
          "model.depth=2", "model.num_heads=2", "model.drop_path=0.1", "aug.mixup=0.8", "aug.cutmix=1.0",
          "aug.re_prob=0.5", "sparse.mask_refresh_interval=2", "ema=true", "ema_decay=0.9", "optim.clip_grad=1.0",
          "optim.epochs=3", "optim.warmup_epochs=1", "eval_interval=100", "log_interval=1", "ckpt_interval=100"]


def _run(tmp_path, name: str, extra: list[str]) -> dict:
    overrides = COMMON + [f"data.path={tmp_path / 'images.npz'}", f"out_dir={tmp_path}", f"run_name={name}"]
    return train(load_config(DeiTConfig, CONFIG_DIR, "tiny", overrides + extra))


def _write_images(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x_train=rng.integers(0, 256, (180, 16, 16, 3), dtype=np.uint8),
             y_train=rng.integers(0, 4, 180), x_test=rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8),
             y_test=rng.integers(0, 4, 32))


def test_resume_is_exact(tmp_path):
    _write_images(tmp_path)
    # 180 train images / 16 = 11 micro-batches per epoch, 5 optimizer steps: step 6 crosses into epoch 1
    straight = _run(tmp_path, "straight", ["max_steps=6"])
    _run(tmp_path, "split", ["max_steps=3"])
    resumed = _run(tmp_path, "split", ["max_steps=6", "data.num_workers=2"])
    assert straight["step"] == resumed["step"] == 6
    _, a = load_checkpoint(tmp_path / "straight" / "ckpt" / "ckpt_00000006.pt")
    _, b = load_checkpoint(tmp_path / "split" / "ckpt" / "ckpt_00000006.pt")
    a["config"]["data"]["num_workers"] = b["config"]["data"]["num_workers"]
    a["config"]["run_name"] = b["config"]["run_name"]
    assert_same(a, b, "checkpoint")
    assert a["data"] == {"epoch": 1, "batch": 1, "batch_size": 16}
    assert straight["val/top1"] == resumed["val/top1"]
    with pytest.raises(CheckpointError, match="already holds checkpoints"):  # a fresh run would lose them
        _run(tmp_path, "straight", ["max_steps=6", "resume=never"])


def _rank_worker(rank: int, tmp_path, ports: list[int]) -> None:
    """One of 2 gloo ranks: 4 steps straight, then 2 + resume + 2 (a fresh process group per run)."""
    torch.set_num_threads(1)  # 2 processes on a 2-core CI box
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    for port, (name, extra) in zip(ports, [("straight", ["max_steps=4"]), ("split", ["max_steps=2"]),
                                           ("split", ["max_steps=4"])]):
        os.environ["MASTER_PORT"] = str(port)
        _run(tmp_path, name, ["batch_size=8", "eval_interval=4", *extra])


def test_resume_is_exact_on_two_gloo_ranks(tmp_path):
    """Each rank draws its own mixup, drop-path and MVUE numbers; a resume restores every rank's streams
    (a reseeded rank 1 changes the gradients, hence the weights)."""
    _write_images(tmp_path)
    # 180 images / 2 ranks / 8 = 12 micro-batches per epoch and rank, 6 optimizer steps
    mp.spawn(_rank_worker, args=(tmp_path, [free_port() for _ in range(3)]), nprocs=2, join=True)
    _, a = load_checkpoint(tmp_path / "straight" / "ckpt" / "ckpt_00000004.pt")
    _, b = load_checkpoint(tmp_path / "split" / "ckpt" / "ckpt_00000004.pt")
    a["config"]["run_name"] = b["config"]["run_name"]
    assert_same(a, b, "checkpoint")
    assert len(a["rng"]) == 2 and not torch.equal(a["rng"][0]["torch"], a["rng"][1]["torch"])
    assert a["meta"]["world_size"] == 2
