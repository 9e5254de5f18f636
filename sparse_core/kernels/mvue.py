"""MVUE 2:4 of dY^T along tokens, written straight into cuSPARSELt's compressed operand (one pass).

Same estimator as `sparse_core.mvue.mvue_24` (two distinct indices per group drawn without replacement
with probability proportional to |x|, kept values divided by their inclusion probability, all-zero
groups zero, non-finite groups NaN); the kernel draws the kept pair from its exact law with one 23-bit
uniform per group (`_pack.mvue_pair`), from Philox keyed by `seed`. The seed is read from device memory
at run time: pass a one-element int64 CUDA tensor (e.g. drawn with torch.randint from torch's CUDA
generator) to get fresh draws on every replay of a captured CUDA graph; an int seed is put in such a
tensor first (one fill launch), so int and tensor seeds of equal value give identical outputs. Not the
same stream as torch's generator, so unbiasedness, not bit equality, is what is checked against
`mvue_24`. On the GPU the divisions use the approximate reciprocal (`rcp.approx.ftz`): a group whose
partial sums are subnormal (< 1.2e-38) or above 2**126 falls back to a valid 2:4 but biased result.
"""

from __future__ import annotations

import torch

from sparse_core.kernels import _pack
from sparse_core.kernels._triton import require_launch
from sparse_core.kernels.compress import _operand_view, launch_packer
from sparse_core.kernels.cslt_layout import new_packed, torch_pack_24
from sparse_core.mvue import mvue_24

__all__ = ["mvue_compress_t", "mvue_24_t", "torch_mvue_compress_t"]


def _seed_tensor(seed: int | torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """The seed as a one-element int64 tensor on dy's device (a tensor seed is used as it is)."""
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64:
            raise ValueError(f"seed tensor must be int64, got {seed.dtype}")
        if seed.numel() != 1:
            raise ValueError(f"seed tensor must have one element, got shape {tuple(seed.shape)}")
        if seed.device != dy.device:
            raise ValueError(f"seed tensor is on {seed.device}, dy on {dy.device}")
        return seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**62:
        raise ValueError(f"seed must be an int in [0, 2**62) or a one-element int64 tensor, got {seed!r}")
    return torch.full((1,), seed, dtype=torch.int64, device=dy.device)


def _launch(dy: torch.Tensor, seed: int | torch.Tensor, dense_out: bool,
            return_sum: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The packed operand, or with dense_out the same estimate as a dense (out, tokens) tensor instead; with
    return_sum also dy summed over tokens (out,), in dy's dtype, from the same read."""
    rows, cols = _operand_view(dy, True, "dy")
    if rows * cols >= 2**35:
        raise ValueError(f"dy has {rows * cols} elements; the Philox counters of this kernel allow < 2**35")
    require_launch(dy, "mvue_compress_t")
    s = _seed_tensor(seed, dy)
    x = (dy if dy.stride(1) == 1 else dy.contiguous()).view(torch.int16)
    if dense_out:
        out = torch.empty(rows, cols, dtype=dy.dtype, device=dy.device)
        d16, p16 = out.view(torch.int16), x  # x: an unused placeholder for the packed output
    else:
        out = new_packed(rows, cols, dy.dtype, dy.device)
        d16, p16 = x, out.view(torch.int16)  # x: an unused placeholder for the dense output
    # per 64-token chunk partial sums (every slot written by the kernel), reduced here in a fixed order
    sums = torch.empty(cols // 64, rows, dtype=torch.float32, device=dy.device) if return_sum else None
    launch_packer(True, rows, cols, x, x.stride(0), x, 0, x, 0, d16, p16, x if sums is None else sums, rows, cols, s,
                  RULE=_pack.RULE_MVUE, MASK_OUT=False, DENSE_OUT=dense_out, SUMS=return_sum,
                  IS_BF16=dy.dtype == torch.bfloat16)
    return (out, sums.sum(0).to(dy.dtype)) if return_sum else out


def mvue_compress_t(
    dy: torch.Tensor, seed: int | torch.Tensor, *, return_sum: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Compressed operand of MVUE_24(dY^T) along tokens; dy is (tokens, out), the operand (out, tokens).
    seed: an int in [0, 2**62) or a one-element int64 tensor on dy's device (read at run time).
    With return_sum, also dy.sum(0) (a linear layer's bias gradient) from the same pass over dy."""
    return _launch(dy, seed, False, return_sum)


def mvue_24_t(dy: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    """The same estimate as `mvue_compress_t(dy, seed)` (same seed, same draws), as a dense (out, tokens):
    what the backend's dense dW GEMM takes."""
    return _launch(dy, seed, True)


def torch_mvue_compress_t(dy: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain-torch twin: torch_pack_24(mvue_24(dy.T, dim=1)) with torch's generator."""
    _operand_view(dy, True, "dy")
    return torch_pack_24(mvue_24(dy.t(), dim=1, generator=generator).contiguous())
