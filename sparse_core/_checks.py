"""Input validation shared by the public API: every bad value is refused with its name and value."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(t: object, name: str) -> torch.Tensor:
    """Refuse anything that is not a floating-point tensor (TypeError names the value)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype {FLOAT_DTYPES}, got {t.dtype}")
    return t


def check_group_dim(t: torch.Tensor, dim: int, name: str, group: int = 4) -> int:
    """Normalise `dim` and require its size to be a positive multiple of `group`."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if t.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-d tensor")
    if not -t.dim() <= dim < t.dim():
        raise ValueError(f"dim={dim} is out of range for {name} of shape {tuple(t.shape)}")
    dim = dim % t.dim()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); 2:4 sparsity needs elements")
    size = t.shape[dim]
    if size == 0 or size % group:
        raise ValueError(
            f"{name}.shape[{dim}] = {size} must be a positive multiple of {group} for 2:4 sparsity "
            f"(shape {tuple(t.shape)})"
        )
    return dim


def check_no_nan(t: torch.Tensor, name: str) -> None:
    """Masks of NaN weights are undefined: refuse them instead of picking arbitrary entries."""
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN ({int(torch.isnan(t).sum())} entries); a 2:4 mask is undefined")
