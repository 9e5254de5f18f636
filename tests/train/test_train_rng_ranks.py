"""Every rank's RNG streams in a checkpoint: gather_rng_states / restore_rng_states, one process and 2 gloo ranks."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sparse_core.train import distributed as D
from sparse_core.train.checkpoint import (
    CheckpointError, CheckpointManager, RNGState, gather_rng_states, restore_rng_states,
)
from dist_testutil import free_port


def _draws() -> tuple:
    """A few values from each stream RNGState covers (CUDA is absent on CPU machines)."""
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_round_trip_one_process_through_a_checkpoint(tmp_path):
    _seed(11)
    _draws()
    saved = gather_rng_states()
    assert isinstance(saved, list) and len(saved) == 1 and set(saved[0]) == {"python", "numpy", "torch", "cuda"}
    CheckpointManager(tmp_path).save(1, {"rng": saved})  # weights_only-loadable
    expected = _draws()
    _seed(12345)
    _, loaded = CheckpointManager(tmp_path).load_latest()
    assert restore_rng_states(loaded["rng"], rank=0, world_size=1, reseed=7) is True
    assert _draws() == expected


def test_old_single_dict_counts_as_one_process():
    """Checkpoints written before every rank was kept hold rank 0's streams as one dict."""
    _seed(3)
    old = RNGState().state_dict()
    expected = _draws()
    _seed(4)
    assert restore_rng_states(old, rank=0, world_size=1, reseed=7) is True
    assert _draws() == expected
    with pytest.warns(UserWarning, match=r"RNG states of 1 process\(es\), this run has 2"):
        assert restore_rng_states(old, rank=0, world_size=2, reseed=7) is False
    _seed(7)
    assert _draws() != expected  # reseeded, not continued


@pytest.mark.parametrize("rank", [0, 1])
def test_count_mismatch_warns_on_rank_0_and_reseeds_every_rank(rank):
    saved = gather_rng_states() * 3  # as if written by 3 processes
    _seed(123)
    fresh = _draws()
    _seed(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert restore_rng_states(saved, rank=rank, world_size=2, reseed=123) is False
    messages = [str(w.message) for w in caught]
    if rank == 0:
        assert any("RNG states of 3 process(es), this run has 2" in m for m in messages), messages
    else:
        assert not messages
    assert _draws() == fresh  # python, numpy and torch all seeded from `reseed`


def test_bad_arguments():
    saved = gather_rng_states()
    with pytest.raises(ValueError, match="rank=1 world_size=1"):
        restore_rng_states(saved, rank=1, world_size=1, reseed=0)
    with pytest.raises(ValueError, match="world_size=0"):
        restore_rng_states(saved, rank=0, world_size=0, reseed=0)
    with pytest.raises(TypeError, match="rank"):
        restore_rng_states(saved, rank=True, world_size=1, reseed=0)
    with pytest.raises(TypeError, match="reseed"):
        restore_rng_states(saved, rank=0, world_size=1, reseed=1.5)
    for bad in (None, [], [saved[0], 3], "rng"):
        with pytest.raises(CheckpointError, match="RNG entry"):
            restore_rng_states(bad, rank=0, world_size=1, reseed=0)
    with pytest.raises(CheckpointError, match="lacks"):
        restore_rng_states([{"torch": torch.get_rng_state()}], rank=0, world_size=1, reseed=0)


def _worker(rank: int, port: int, directory: str, results) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = D.init_distributed("cpu")
    try:
        _seed(100 + rank)  # an own stream per rank
        _draws()
        saved = gather_rng_states()  # every rank takes part
        if env.is_main:
            CheckpointManager(directory).save(1, {"rng": saved})
        D.barrier()
        expected = _draws()  # what this rank draws next
        _seed(999)  # the same scrambled state everywhere
        _, loaded = CheckpointManager(directory).load_latest()
        restored = restore_rng_states(loaded["rng"], env.rank, env.world_size, reseed=0)
        results[rank] = (len(saved), restored, expected, _draws(),
                         torch.equal(saved[0]["torch"], saved[1]["torch"]))
    finally:
        D.cleanup()


def test_two_gloo_ranks_each_get_their_own_stream_back(tmp_path):
    port = free_port()
    results = mp.Manager().dict()
    # fork, not spawn: the children need not re-import torch (CPU only, so forking is safe)
    mp.start_processes(_worker, args=(port, str(tmp_path), results), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        count, restored, expected, drawn, same_torch = results[rank]
        assert (count, restored, same_torch) == (2, True, False)
        assert drawn == expected, rank
    assert results[0][2] != results[1][2]  # the ranks' streams differ, so each got its own back
