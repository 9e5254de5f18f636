"""MVUE 2:4 of dY^T along tokens, written straight into cuSPARSELt's compressed operand (one pass).

Same estimator as `sparse_core.mvue.mvue_24` (two distinct indices per group drawn without replacement
with probability proportional to |x|, kept values divided by their inclusion probability, all-zero
groups zero, non-finite groups NaN), with Philox uniforms from `seed` (reproducible for a given seed;
not the same stream as torch's CPU generator, so unbiasedness, not bit equality, is what is checked).
"""

from __future__ import annotations

import torch

from sparse_core.kernels._triton import has_triton
from sparse_core.kernels._triton import require_launch
from sparse_core.kernels.compress import _operand_view, block_cols
from sparse_core.kernels.cslt_layout import NIBBLE_TABLE_BITS, meta_rows, new_packed, torch_pack_24
from sparse_core.mvue import mvue_24

__all__ = ["mvue_compress_t", "mvue_24_t", "torch_mvue_compress_t"]

if has_triton():
    import triton
    import triton.language as tl

    from sparse_core.kernels._pack import pack_tile

    @triton.jit
    def _mvue_kernel(x_ptr, sxr, sxc, d_ptr, out_ptr, rows, cols, seed,
                     DENSE_OUT: tl.constexpr, BC: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        pack_tile(x_ptr, sxr, sxc, x_ptr, 0, 0, x_ptr, d_ptr, out_ptr,
                        rows, cols, tl.program_id(0) * 64, tl.program_id(1) * BC, seed,
                        2, False, DENSE_OUT, BC, TABLE, IS_BF16)


def _check_seed(seed: int) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**62:
        raise ValueError(f"seed must be an int in [0, 2**62), got {seed!r}")
    return seed


def _launch(dy: torch.Tensor, seed: int, dense_out: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    rows, cols, sxr, sxc = _operand_view(dy, True, "dy")
    _check_seed(seed)
    if rows * cols >= 2**32:
        raise ValueError(f"dy has {rows * cols} elements; the Philox offsets of this kernel allow < 2**32")
    require_launch(dy, "mvue_compress_t")
    out = new_packed(rows, cols, dy.dtype, dy.device)
    dense = torch.empty(rows, cols, dtype=dy.dtype, device=dy.device) if dense_out else None
    bc = block_cols(cols)
    grid = (meta_rows(rows) // 64, triton.cdiv(cols, bc))
    d16 = dense.view(torch.int16) if dense_out else out.view(torch.int16)
    _mvue_kernel[grid](dy.view(torch.int16), sxr, sxc, d16, out.view(torch.int16), rows, cols, seed,
                       DENSE_OUT=dense_out, BC=bc, TABLE=NIBBLE_TABLE_BITS, IS_BF16=dy.dtype == torch.bfloat16)
    return out, dense


def mvue_compress_t(dy: torch.Tensor, seed: int) -> torch.Tensor:
    """Compressed operand of MVUE_24(dY^T) along tokens; dy is (tokens, out), the operand (out, tokens)."""
    return _launch(dy, seed, False)[0]


def mvue_24_t(dy: torch.Tensor, seed: int) -> torch.Tensor:
    """The same estimate as `mvue_compress_t(dy, seed)` (same seed, same draws), as a dense (out, tokens)."""
    return _launch(dy, seed, True)[1]


def torch_mvue_compress_t(dy: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain-torch twin: torch_pack_24(mvue_24(dy.T, dim=1)) with torch's generator."""
    _operand_view(dy, True, "dy")
    return torch_pack_24(mvue_24(dy.t(), dim=1, generator=generator).contiguous())
