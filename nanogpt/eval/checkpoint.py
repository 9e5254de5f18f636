"""Load any recipe checkpoint (training, dense export or 2:4-compressed export) back into a GPT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nanogpt.config import SparseSection
from nanogpt.model import GPT, GPTConfig
from nanogpt.train import build_model
from sparse_core import SparseController
from sparse_core.train import CheckpointError, CheckpointManager

__all__ = ["LoadedRun", "find_checkpoint", "load_run", "compress_24", "decompress_24"]


@dataclass
class LoadedRun:
    model: GPT
    controller: SparseController
    step: int
    method: str
    meta: dict[str, Any]  # tokenizer and vocabulary of the training data
    config: dict[str, Any]  # the resolved training config
    path: Path
    compressed: list[str]  # layers stored 2:4-compressed (a 'semi-structured' export), now dense nn.Linear


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file: `path` itself, or the newest one in a run folder (`<run>/ckpt/`) or ckpt folder."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "ckpt", path):
        files = sorted(folder.glob("ckpt_*.pt")) if folder.is_dir() else []
        if files:
            return files[-1]
    raise CheckpointError(f"no checkpoint at {str(path)!r} (expected a ckpt_*.pt file, or a run folder holding ckpt/)")


def compress_24(weight: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2:4 storage of a (out, in) weight: kept values (out, in/2) and per group one uint8 = i0 | i1 << 2."""
    out, inp = weight.shape
    groups = mask.reshape(out, inp // 4, 4)
    if not bool((groups.sum(-1) == 2).all()):
        raise ValueError("compress_24: the mask is not 2:4 along the input dimension")
    pos = torch.nonzero(groups.reshape(-1, 4))[:, 1].reshape(out, inp // 4, 2)  # ascending kept positions
    values = torch.gather(weight.reshape(out, inp // 4, 4), 2, pos).reshape(out, inp // 2)
    return values.contiguous(), (pos[..., 0] | (pos[..., 1] << 2)).to(torch.uint8)


def decompress_24(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The dense (out, in) weight of `compress_24`'s output, zeros outside the mask."""
    out, half = values.shape
    idx = indices.to(torch.int64)
    pos = torch.stack((idx & 3, idx >> 2), dim=-1)  # (out, in/4, 2)
    dense = torch.zeros(out, half // 2, 4, dtype=values.dtype, device=values.device)
    dense.scatter_(2, pos, values.reshape(out, half // 2, 2))
    return dense.reshape(out, 2 * half)


def load_run(path: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild the model of a checkpoint (with its sparse layers, masks and controller state) on `device`."""
    file = find_checkpoint(path)
    step, state = CheckpointManager(file.parent).load(file)
    missing = {"model", "model_args", "method", "meta", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{file} is not a nanogpt checkpoint: it lacks {sorted(missing)}")
    cfg = state["config"]
    options = SparseSection(**cfg["sparse"]).options()
    model, ctl = build_model(GPTConfig(**state["model_args"]), state["method"], cfg["train"]["max_steps"], options,
                             device)
    weights = dict(state["model"])
    for fqn, packed in state.get("compressed", {}).items():  # 2:4 export: rebuild the dense weights
        weights[f"{fqn}.weight"] = decompress_24(packed["values"], packed["indices"])
    model.load_state_dict(weights)
    if "controller" in state:
        ctl.load_state_dict(state["controller"])
    model.eval()
    return LoadedRun(model, ctl, step, state["method"], state["meta"], cfg, file, sorted(state.get("compressed", {})))
