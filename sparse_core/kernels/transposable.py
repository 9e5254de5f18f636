"""Exact transposable 2:4 mask plus both compressed operands (W and W^T) and the bool mask, one launch.

Each program takes a 64x64 tile of W: its 256 aligned 4x4 blocks of |W| are scored against the 90
patterns (two ones per row and column) as one tl.dot (256 x 16 @ 16 x 128, zero-padded; fp32
accumulation), argmax with ties to the lowest pattern index (== masks.transposable_mask_24 whenever the
fp32 block sums are exact, e.g. always for magnitudes within 2**16 of each other). The tile's mask is
written, then (after a block barrier, reading W and the mask back from L1/L2) the tile is packed twice
by the compress building blocks: rows of W, and rows of W^T.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sparse_core.kernels._triton import has_triton
from sparse_core.kernels._triton import require_launch
from sparse_core.kernels.compress import _operand_view
from sparse_core.kernels.cslt_layout import NIBBLE_TABLE32, new_packed, torch_pack_24
from sparse_core.masks import transposable_mask_24, transposable_patterns

__all__ = ["transposable_compress", "torch_transposable_compress"]

if has_triton():
    import triton
    import triton.language as tl

    from sparse_core.kernels._pack import pack_cols_tile, pack_rows_tile, to_float

    @triton.jit
    def _transposable_kernel(x_ptr, p_ptr, pb_ptr, m_ptr, out_ptr, outt_ptr, rows, cols,
                             TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        r0 = tl.program_id(0) * 64
        c0 = tl.program_id(1) * 64
        b = tl.arange(0, 256)  # 16 x 16 blocks of the tile
        k = tl.arange(0, 16)  # 4 x 4 entries of a block
        off = ((b // 16) * 4 * cols + (b % 16) * 4)[:, None] + ((k // 4) * cols + k % 4)[None, :]
        base = r0.to(tl.int64) * cols + c0
        a = tl.abs(to_float(tl.load(x_ptr + base + off), IS_BF16))  # exact in tf32: 16-bit inputs fit its mantissa
        pats = tl.load(p_ptr + k[:, None] * 128 + tl.arange(0, 128)[None, :])
        scores = tl.dot(a, pats, input_precision="tf32")  # (256, 128), fp32 accumulation
        best = tl.argmax(scores, axis=1, tie_break_left=True)
        pb = tl.load(pb_ptr + best)
        keep = ((pb[:, None] >> k[None, :]) & 1).to(tl.uint8)
        tl.store(m_ptr + base + off, keep)
        tl.debug_barrier()  # the tile's mask is read back by other threads of this program
        pack_rows_tile(x_ptr, cols, m_ptr, cols, m_ptr, cols, out_ptr, rows, cols, r0, c0,
                       0, False, 64, TABLE)
        pack_cols_tile(x_ptr, cols, m_ptr, cols, m_ptr, cols, x_ptr, outt_ptr, cols, rows, c0, r0, 0,
                       0, False, False, 64, TABLE, IS_BF16)


@lru_cache(maxsize=None)
def _pattern_operands(dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(16, 128) 0/1 pattern matrix (columns 90.. zero) and the 16-bit code of each pattern."""
    pats = transposable_patterns().reshape(90, 16)
    mat = torch.zeros(16, 128, dtype=torch.float32)
    mat[:, :90] = pats.t().float()
    codes = torch.zeros(128, dtype=torch.int32)
    codes[:90] = (pats.to(torch.int32) << torch.arange(16)).sum(1).to(torch.int32)
    return mat.to(device), codes.to(device)


def _check_weight(w: torch.Tensor) -> tuple[int, int]:
    rows, cols = _operand_view(w, False, "w")
    _operand_view(w, True, "w")
    if rows % 64 or cols % 64:
        raise ValueError(f"transposable_compress needs both dims of w to be multiples of 64, got {tuple(w.shape)}")
    if not w.is_contiguous():
        raise ValueError("transposable_compress needs a contiguous w")
    return rows, cols


def transposable_compress(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(compressed w, compressed w.T, bool mask) under the exact transposable 2:4 mask of w (NaN-free)."""
    rows, cols = _check_weight(w)
    require_launch(w, "transposable_compress")
    pats, codes = _pattern_operands(w.dtype, str(w.device))
    mask = torch.empty(rows, cols, dtype=torch.bool, device=w.device)
    out = new_packed(rows, cols, w.dtype, w.device)
    out_t = new_packed(cols, rows, w.dtype, w.device)
    _transposable_kernel[(rows // 64, cols // 64)](
        w.view(torch.int16), pats, codes, mask.view(torch.uint8), out.view(torch.int16), out_t.view(torch.int16),
        rows, cols, TABLE=NIBBLE_TABLE32, IS_BF16=w.dtype == torch.bfloat16, num_warps=8)
    return out, out_t, mask


def torch_transposable_compress(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch twin: transposable_mask_24 + torch_pack_24 both ways."""
    _check_weight(w)
    m = transposable_mask_24(w)
    return torch_pack_24(w, m), torch_pack_24(w.t().contiguous(), m.t().contiguous()), m
