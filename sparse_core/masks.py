"""2:4 masks: magnitude masks along one dim and exact transposable masks (W and W^T both 2:4).

Reference: Hu et al., "Accelerating Transformer Pre-training with 2:4 Sparsity", ICML 2024
(arXiv 2404.01847), Sec. 4: the transposable mask is found by scoring every aligned 4x4 block of |W|
against all 90 valid 4x4 patterns at once (a convolution, here a matmul) and keeping the argmax.
These plain-torch functions are the ground truth that the Triton kernels are tested against.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch

from sparse_core._checks import check_float_tensor, check_group_dim, check_no_nan

__all__ = [
    "mask_24",
    "transposable_mask_24",
    "transposable_patterns",
    "is_valid_24",
    "is_transposable_24",
    "replace_mask",
]


def _keep_top2_of_4(score: torch.Tensor) -> torch.Tensor:
    """For score (..., 4): True for the two largest entries; ties go to the lower index."""
    a = score.unsqueeze(-1)  # (..., 4, 1): candidate i
    b = score.unsqueeze(-2)  # (..., 1, 4): rival j
    idx = torch.arange(4, device=score.device)
    lower = idx.view(1, 4) < idx.view(4, 1)  # [i, j] = j < i
    beats = (b > a) | ((b == a) & lower)  # rival j beats candidate i
    return beats.sum(-1) < 2


def mask_24(w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Boolean 2:4 mask keeping the 2 largest |w| of every 4 consecutive entries along `dim`.

    Ties go to the lower index, so the mask is deterministic. NaN weights are refused.
    """
    check_float_tensor(w, "w")
    dim = check_group_dim(w, dim, "w")
    check_no_nan(w, "w")
    moved = w.detach().abs().movedim(dim, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4)
    keep = _keep_top2_of_4(groups).reshape(moved.shape)
    return keep.movedim(-1, dim).contiguous()


@lru_cache(maxsize=None)
def _pattern_table_cpu() -> torch.Tensor:
    rows = list(itertools.combinations(range(4), 2))  # the 6 ways to keep 2 of 4 in one row
    patterns = []
    for choice in itertools.product(rows, repeat=4):
        p = torch.zeros(4, 4, dtype=torch.bool)
        for r, cols in enumerate(choice):
            p[r, list(cols)] = True
        if bool((p.sum(0) == 2).all()):
            patterns.append(p)
    table = torch.stack(patterns)
    assert table.shape == (90, 4, 4), table.shape
    return table


def transposable_patterns() -> torch.Tensor:
    """The 90 4x4 boolean patterns with exactly two ones per row and per column, in a fixed order."""
    return _pattern_table_cpu().clone()


def transposable_mask_24(w: torch.Tensor) -> torch.Tensor:
    """Exact transposable 2:4 mask of a 2-D `w`: each aligned 4x4 block gets the best of 90 patterns.

    Scores are |blocks| (n_blocks x 16) @ patterns (16 x 90), argmax per block; ties take the lowest
    pattern index; an infinite entry counts as the largest magnitude (kept, as mask_24 keeps it). Both dims must
    be multiples of 4.
    """
    check_float_tensor(w, "w")
    if w.dim() != 2:
        raise ValueError(f"transposable_mask_24 needs a 2-D w, got shape {tuple(w.shape)}")
    check_group_dim(w, 0, "w")
    check_group_dim(w, 1, "w")
    check_no_nan(w, "w")
    rows, cols = w.shape
    # Scores in float64 so that equal block sums compare equal and ties resolve by pattern index.
    a = w.detach().abs().to(torch.float64 if w.device.type == "cpu" else torch.float32)
    a = torch.nan_to_num(a, posinf=torch.finfo(a.dtype).max / 16)  # 0 * inf would make NaN scores; 8 terms stay finite
    blocks = a.reshape(rows // 4, 4, cols // 4, 4).permute(0, 2, 1, 3).reshape(-1, 16)
    table = _pattern_table_cpu().to(device=w.device)
    scores = blocks @ table.reshape(90, 16).to(a.dtype).t()  # (n_blocks, 90)
    best = table[scores.argmax(dim=1)]  # (n_blocks, 4, 4)
    return best.reshape(rows // 4, cols // 4, 4, 4).permute(0, 2, 1, 3).reshape(rows, cols).contiguous()


def is_valid_24(mask: torch.Tensor, dim: int = -1) -> bool:
    """True when every group of 4 consecutive entries along `dim` keeps exactly two."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    dim = check_group_dim(mask, dim, "mask")
    moved = mask.movedim(dim, -1)
    return bool((moved.reshape(*moved.shape[:-1], -1, 4).sum(-1) == 2).all())


def is_transposable_24(mask: torch.Tensor) -> bool:
    """True when a 2-D mask is 2:4 along rows and along columns."""
    return mask.dim() == 2 and is_valid_24(mask, 1) and is_valid_24(mask, 0)


def replace_mask(mask: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Overwrite `mask` in place with `new`; returns how many entries changed (a 0-d int64 tensor on the mask's
    device, no host sync): a mask refresh's flip count."""
    flips = (new != mask).sum()
    mask.copy_(new)
    return flips
