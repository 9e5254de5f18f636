"""Single-process DistEnv and a 2-process gloo all_reduce_mean / broadcast_object."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from sparse_core.train import distributed as D
from dist_testutil import free_port

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_single_process(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    env = D.init_distributed("cpu")
    assert (env.rank, env.local_rank, env.world_size, env.device, env.is_main) == (0, 0, 1, torch.device("cpu"), True)
    assert D.init_distributed("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    t = torch.tensor([1.0, 3.0])
    out = D.all_reduce_mean(t)
    assert torch.equal(out, t) and out is not t
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    D.barrier()
    D.cleanup()
    with pytest.raises(TypeError, match="floating"):
        D.all_reduce_mean(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="device"):
        D.init_distributed("tpu:0")


def test_bad_torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK"):
        D.init_distributed("cpu")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="RANK=5"):
        D.init_distributed("cpu")


def _worker(rank: int, world_size: int, port: int, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = D.init_distributed("cpu")
    try:
        mean = D.all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))
        obj = D.broadcast_object({"seed": 1234} if env.is_main else None)
        D.barrier()
        results[rank] = (env.rank, env.world_size, mean.tolist(), obj)
    finally:
        D.cleanup()


def test_two_process_gloo():
    port = free_port()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
    assert results[0] == (0, 2, [0.5, 5.0], {"seed": 1234})
    assert results[1] == (1, 2, [0.5, 5.0], {"seed": 1234})


def test_wrap_ddp_broadcasts_buffers_only_for_running_statistics(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        ffn = torch.nn.Sequential(torch.nn.Linear(8, 8))
        ffn.register_buffer("mask", torch.ones(8, 8, dtype=torch.bool))  # like SparseLinear's mask
        assert D.wrap_ddp(ffn, torch.device("cpu")).broadcast_buffers is False
        bn = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
        assert D.wrap_ddp(bn, torch.device("cpu")).broadcast_buffers is True
    finally:
        dist.destroy_process_group()
