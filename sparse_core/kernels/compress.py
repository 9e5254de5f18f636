"""Compress a 16-bit matrix into cuSPARSELt's 2:4 operand in one pass: under a given mask, or with the
magnitude mask (== masks.mask_24) computed in the same pass; row-major input or its transpose.

Plain functions rather than torch.library custom ops: they return tuples and optional outputs, and are
called eagerly by the backend once per step (weights) or micro-step (gradients).
"""

from __future__ import annotations

import torch

from sparse_core.kernels import _pack
from sparse_core.kernels._triton import has_triton, interpreting, require_launch
from sparse_core.kernels.cslt_layout import NIBBLE_TABLE32, check_half_matrix, check_packable, new_packed, torch_pack_24
from sparse_core.masks import mask_24

__all__ = ["compress_24", "torch_compress_24"]

_BLOCK_COLS = (256, 128, 64)  # columns of A per program (autotuned with num_warps on CUDA)

if has_triton():
    import triton
    import triton.language as tl

    from sparse_core.kernels._pack import pack_cols_tile, pack_rows_tile

    def _tile_configs(cols: int) -> list:
        """BC x num_warps candidates whose BC divides `cols` (32 when none does)."""
        bcs = [bc for bc in _BLOCK_COLS if cols % bc == 0] or [32]
        return [triton.Config({"BC": bc}, num_warps=w) for bc in bcs for w in (2, 4, 8)]

    def _prune(configs: list, named_args: dict, **kwargs) -> list:
        return _tile_configs(named_args["cols"])

    def _tuned(fn, keys: list[str]):
        """`fn` autotuned over _tile_configs, once per key (a short benchmark: ~20 ms per config)."""
        return triton.autotune(
            configs=_tile_configs(256), key=keys, prune_configs_by={"early_config_prune": _prune},
            do_bench=lambda call, quantiles: triton.testing.do_bench(call, warmup=5, rep=20, quantiles=quantiles),
        )(fn)

    @triton.jit
    def _rows_kernel(x_ptr, sx, m_ptr, sm, mo_ptr, smo, out_ptr, rows, cols,
                     RULE: tl.constexpr, MASK_OUT: tl.constexpr, BC: tl.constexpr, TABLE: tl.constexpr):
        pack_rows_tile(x_ptr, sx, m_ptr, sm, mo_ptr, smo, out_ptr, rows, cols,
                       tl.program_id(0) * 64, tl.program_id(1) * BC, RULE, MASK_OUT, BC, TABLE)

    @triton.jit
    def _cols_kernel(x_ptr, sx, m_ptr, sm, mo_ptr, smo, d_ptr, out_ptr, s_ptr, rows, cols, seed,
                     RULE: tl.constexpr, MASK_OUT: tl.constexpr, DENSE_OUT: tl.constexpr, SUMS: tl.constexpr,
                     BC: tl.constexpr, TABLE: tl.constexpr, IS_BF16: tl.constexpr):
        pack_cols_tile(x_ptr, sx, m_ptr, sm, mo_ptr, smo, d_ptr, out_ptr, s_ptr, rows, cols,
                       tl.program_id(0) * 64, tl.program_id(1) * BC, seed,
                       RULE, MASK_OUT, DENSE_OUT, SUMS, BC, TABLE, IS_BF16)

    _rows_tuned = _tuned(_rows_kernel, ["rows", "cols", "RULE", "MASK_OUT"])
    _cols_tuned = _tuned(_cols_kernel, ["rows", "cols", "RULE", "MASK_OUT", "DENSE_OUT", "SUMS"])


def launch_packer(transpose: bool, rows: int, cols: int, *args, **constexprs) -> None:
    """Run the rows (A = X) or cols (A = X^T) packer over an r x c operand A: autotuned on CUDA, the
    widest tile under Triton's CPU interpreter."""
    tuned, plain = (_cols_tuned, _cols_kernel) if transpose else (_rows_tuned, _rows_kernel)
    if interpreting():
        bc = _tile_configs(cols)[0].kwargs["BC"]
        plain[(rows // 64, cols // bc)](*args, BC=bc, TABLE=NIBBLE_TABLE32, **constexprs)
    else:
        tuned[lambda meta: (rows // 64, cols // meta["BC"])](*args, TABLE=NIBBLE_TABLE32, **constexprs)


def _operand_view(dense: torch.Tensor, transpose: bool, name: str) -> tuple[int, int]:
    """(rows, cols) of A = dense or dense.T, validated."""
    check_half_matrix(dense, name)
    rows, cols = (dense.shape[1], dense.shape[0]) if transpose else tuple(dense.shape)
    check_packable(rows, cols, f"{name}{'.T' if transpose else ''} (the sparse operand)")
    return rows, cols


def _check_mask(mask: torch.Tensor, dense: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != dense.shape or mask.device != dense.device:
        raise ValueError(f"mask has shape {tuple(mask.shape)} on {mask.device}, dense has {tuple(dense.shape)} on {dense.device}")


def compress_24(
    dense: torch.Tensor, mask: torch.Tensor | None = None, *, transpose: bool = False, return_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Compressed operand of A = dense (or dense.T) kept where `mask` (dense's shape), or by the magnitude
    rule along A's rows when mask is None; byte-identical to torch._cslt_compress(masked A).
    With return_mask, also the bool mask used, in dense's orientation."""
    rows, cols = _operand_view(dense, transpose, "dense")
    if mask is not None:
        _check_mask(mask, dense)
    require_launch(dense, "compress_24")
    x = dense if dense.stride(1) == 1 else dense.contiguous()
    out = new_packed(rows, cols, dense.dtype, dense.device)
    bits = x.view(torch.int16)
    m8 = mo8 = bits  # placeholders when no mask is read / written
    mask_out = None
    if mask is not None:
        m8 = (mask if mask.stride(1) == 1 else mask.contiguous()).view(torch.uint8)
        mask_out = mask if return_mask else None
    elif return_mask:
        mask_out = torch.empty(dense.shape, dtype=torch.bool, device=dense.device)
        mo8 = mask_out.view(torch.uint8)
    rule = _pack.RULE_MASK if mask is not None else _pack.RULE_MAGNITUDE
    mask_write = mask is None and return_mask
    if transpose:
        launch_packer(True, rows, cols, bits, bits.stride(0), m8, m8.stride(0), mo8, mo8.stride(0), bits,
                      out.view(torch.int16), bits, rows, cols, 0, RULE=rule, MASK_OUT=mask_write, DENSE_OUT=False,
                      SUMS=False, IS_BF16=dense.dtype == torch.bfloat16)
    else:
        launch_packer(False, rows, cols, bits, bits.stride(0), m8, m8.stride(0), mo8, mo8.stride(0),
                      out.view(torch.int16), rows, cols, RULE=rule, MASK_OUT=mask_write)
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
