"""Process-group set-up from torchrun's environment; every helper is a no-op in a single process."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "cleanup", "barrier", "all_reduce_mean", "broadcast_object", "no_sync_unless",
           "distributed_session", "wrap_ddp"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"WORLD_SIZE is set but {name} is not; launch with torchrun")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but CUDA is not available")
        return torch.device("cuda", local_rank if dev.index is None else dev.index)
    return dev


def init_distributed(device: str = "auto") -> DistEnv:
    """Read RANK/LOCAL_RANK/WORLD_SIZE (torchrun) and init NCCL (CUDA) or gloo (CPU); single process without them."""
    if "WORLD_SIZE" not in os.environ:
        env = DistEnv(0, 0, 1, _pick_device(device, 0))
    else:
        world_size, rank, local_rank = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
        if not (world_size >= 1 and 0 <= rank < world_size and local_rank >= 0):
            raise ValueError(f"inconsistent torchrun environment: RANK={rank} LOCAL_RANK={local_rank} "
                             f"WORLD_SIZE={world_size}")
        env = DistEnv(rank, local_rank, world_size, _pick_device(device, local_rank))
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return env
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE is set but {name} is not; launch with torchrun")
    if env.device.type == "cuda":
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # the lent multi-GPU hosts need NVLink multicast off
        dist.init_process_group("nccl", rank=env.rank, world_size=env.world_size, device_id=env.device)
    else:
        dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size)
    return env


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistEnv]:
    """`init_distributed`, then `cleanup` however the block ends (pre-emption, errors included)."""
    env = init_distributed(device)
    try:
        yield env
    finally:
        cleanup()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks, as a new tensor (a detached copy in a single process)."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"all_reduce_mean needs a floating-point tensor, got {getattr(t, 'dtype', type(t))}")
    out = t.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
        out /= dist.get_world_size()
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable `obj` on every rank (returned as is in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def no_sync_unless(model: torch.nn.Module, sync: bool) -> AbstractContextManager:
    """`model.no_sync()` (DDP, also under torch.compile) unless `sync`; a null context for an unwrapped model.

    Run the micro-batch's forward AND backward inside it: DDP reads the flag in both.
    """
    if sync or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under DistributedDataParallel on `device`. Buffers are re-broadcast from rank 0 before each
    forward only when the model keeps running statistics (BatchNorm): SparseLinear masks are recomputed
    identically on every rank from identical weights, so sending them every step would be wasted traffic."""
    running_stats = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=running_stats)
