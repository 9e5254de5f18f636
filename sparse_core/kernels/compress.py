"""Compress a 16-bit matrix into cuSPARSELt's 2:4 operand in one pass: under a given mask, or with the
magnitude mask (== masks.mask_24) computed in the same pass; row-major input or its transpose.

Plain functions rather than torch.library custom ops: they return tuples and optional outputs, and are
called eagerly by the backend once per step (weights) or micro-step (gradients).
"""

from __future__ import annotations

import torch

from sparse_core.kernels import _pack
from sparse_core.kernels._triton import has_triton
from sparse_core.kernels._triton import require_launch
from sparse_core.kernels.cslt_layout import (
    NIBBLE_TABLE_BITS,
    check_packable,
    meta_rows,
    new_packed,
    torch_pack_24,
)
from sparse_core.masks import mask_24

__all__ = ["compress_24", "torch_compress_24"]

_HALF = (torch.float16, torch.bfloat16)

if has_triton():
    import triton
    import triton.language as tl

    from sparse_core.kernels._pack import pack_tile

    @triton.jit
    def _compress_kernel(x_ptr, sxr, sxc, m_ptr, smr, smc, mo_ptr, out_ptr, rows, cols,
                         RULE: tl.constexpr, MASK_OUT: tl.constexpr, BC: tl.constexpr,
                         TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        pack_tile(x_ptr, sxr, sxc, m_ptr, smr, smc, mo_ptr, x_ptr, out_ptr,
                        rows, cols, tl.program_id(0) * 64, tl.program_id(1) * BC, 0,
                        RULE, MASK_OUT, False, BC, TABLE, IS_BF16)


def _operand_view(dense: torch.Tensor, transpose: bool, name: str) -> tuple[int, int, int, int]:
    """(rows, cols, row stride, col stride) of A = dense or dense.T, validated."""
    if not isinstance(dense, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(dense).__name__}")
    if dense.dtype not in _HALF:
        raise TypeError(f"{name} must be float16 or bfloat16, got {dense.dtype}")
    if dense.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(dense.shape)}")
    rows, cols = (dense.shape[1], dense.shape[0]) if transpose else tuple(dense.shape)
    check_packable(rows, cols, f"{name}{'.T' if transpose else ''} (the sparse operand)")
    sr, sc = (dense.stride(1), dense.stride(0)) if transpose else (dense.stride(0), dense.stride(1))
    return rows, cols, sr, sc


def _check_mask(mask: torch.Tensor, dense: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != dense.shape or mask.device != dense.device:
        raise ValueError(f"mask has shape {tuple(mask.shape)} on {mask.device}, dense has {tuple(dense.shape)} on {dense.device}")


def block_cols(cols: int) -> int:
    """Columns per program: 128, or fewer for narrow matrices."""
    return 128 if cols >= 128 else (64 if cols >= 64 else 32)


def compress_24(
    dense: torch.Tensor, mask: torch.Tensor | None = None, *, transpose: bool = False, return_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Compressed operand of A = dense (or dense.T) kept where `mask` (dense's shape), or by the magnitude
    rule along A's rows when mask is None; byte-identical to torch._cslt_compress(masked A).
    With return_mask, also the bool mask used, in dense's orientation."""
    rows, cols, sxr, sxc = _operand_view(dense, transpose, "dense")
    if mask is not None:
        _check_mask(mask, dense)
    require_launch(dense, "compress_24")
    out = new_packed(rows, cols, dense.dtype, dense.device)
    bits = dense.view(torch.int16)
    mask_out = None
    if mask is not None:
        m8 = mask.view(torch.uint8)  # read the given mask
        mask_out = mask if return_mask else None
    elif return_mask:
        mask_out = torch.empty(dense.shape, dtype=torch.bool, device=dense.device)
        m8 = mask_out.view(torch.uint8)  # write the magnitude mask
    else:
        m8 = bits  # unused
    smr, smc = (m8.stride(1), m8.stride(0)) if transpose else (m8.stride(0), m8.stride(1))
    bc = block_cols(cols)
    grid = (meta_rows(rows) // 64, triton.cdiv(cols, bc))
    _compress_kernel[grid](bits, sxr, sxc, m8, smr, smc, m8, out.view(torch.int16), rows, cols,
                           RULE=_pack.RULE_MASK if mask is not None else _pack.RULE_MAGNITUDE,
                           MASK_OUT=mask is None and return_mask, BC=bc, TABLE=NIBBLE_TABLE_BITS,
                           IS_BF16=dense.dtype == torch.bfloat16)
    return (out, mask_out) if return_mask else out


def torch_compress_24(
    dense: torch.Tensor, mask: torch.Tensor | None = None, *, transpose: bool = False, return_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch twin of `compress_24` (mask_24 + torch_pack_24)."""
    _operand_view(dense, transpose, "dense")
    a = dense.t() if transpose else dense
    if mask is None:
        m = mask_24(a, dim=1)
    else:
        _check_mask(mask, dense)
        m = mask.t() if transpose else mask
    packed = torch_pack_24(a.contiguous(), m.contiguous())
    return (packed, (m.t() if transpose else m).contiguous()) if return_mask else packed
