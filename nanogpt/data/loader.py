"""Batches of random windows from a memory-mapped uint16 token file, resumable to the exact batch.

The windows of optimizer step s are drawn from a generator seeded by (seed, s), for the whole global
batch at once; process r of W takes micro-batches r, r+W, ... . So the data depend only on the step:
any world size sees the same global batch, and the Stateful position (steps consumed) is all a
checkpoint needs to continue exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparse_core.train.config import ConfigError

__all__ = ["TokenBatches", "read_meta"]

_VAL_STREAM = 0x5EED_0FF5  # seeds the fixed validation windows apart from the training ones


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    """meta.json of a prepared data folder (tokenizer, vocabulary, token counts)."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: prepare the data first, e.g. python -m nanogpt.data.prepare stdlib_char "
            f"(or run nanogpt/start.sh, which does it)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); prepare the data again with nanogpt.data.prepare") from e
    vocab = meta.get("vocab_size") if isinstance(meta, dict) else None
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{path} needs an int vocab_size >= 1, got {vocab!r}; prepare the data again")
    return meta


class TokenBatches:
    """Micro-batches (x, y) of shape (batch_size, block_size), y = x shifted by one token."""

    def __init__(self, path: str | Path, block_size: int, batch_size: int, micro_batches: int, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"token file {path} not found; run python -m nanogpt.data.prepare first")
        if micro_batches % world_size:
            raise ConfigError(f"{micro_batches} micro-batches per step cannot be split over {world_size} processes; "
                              "make train.grad_accum a multiple of the number of processes")
        size = path.stat().st_size
        if size == 0 or size % 2:
            raise ValueError(f"{path} holds {size} bytes; a token file is a non-empty array of uint16 (2 bytes "
                             "each): it is empty or truncated, prepare the data again")
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")
        if len(self.tokens) <= block_size + 1:
            raise ValueError(f"{path} holds {len(self.tokens)} tokens, too few for block_size={block_size}")
        self.block_size, self.batch_size, self.micro_batches = block_size, batch_size, micro_batches
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.position = 0  # optimizer steps consumed

    def _starts(self, key: int, count: int) -> np.ndarray:
        """(count, batch_size) window starts from the generator seeded by (seed, key)."""
        rng = np.random.default_rng([self.seed, key])
        return rng.integers(0, len(self.tokens) - self.block_size - 1, size=(count, self.batch_size))

    def _batch(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        windows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts]).astype(np.int64)
        x = torch.from_numpy(windows[:, :-1].copy())  # (B, T)
        y = torch.from_numpy(windows[:, 1:].copy())  # (B, T), the next tokens
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap compute
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This process's micro-batches of the next optimizer step."""
        starts = self._starts(self.position, self.micro_batches)[self.rank :: self.world_size]
        self.position += 1
        return [self._batch(s) for s in starts]

    def fixed_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of `count` fixed micro-batches (the same at every evaluation)."""
        starts = self._starts(_VAL_STREAM, count)[self.rank :: self.world_size]
        return [self._batch(s) for s in starts]

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "tokens": len(self.tokens)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed or state["tokens"] != len(self.tokens):
            raise ValueError(f"data state is for seed {state['seed']} over {state['tokens']} tokens, this loader "
                             f"has seed {self.seed} over {len(self.tokens)} tokens: not the same data stream")
        self.position = int(state["position"])
