"""Exact transposable 2:4 masks on the GPU: the mask alone (`transposable_mask`) or the mask plus both
compressed operands (W and W^T) in one launch (`transposable_compress`).

A program takes a tile of W: its aligned 4x4 blocks of |W| are scored against the 90 patterns (two ones
per row and column) as one tl.dot (blocks x 16 @ 16 x 128, zero-padded; fp32 accumulation), argmax with
ties to the lowest pattern index (== masks.transposable_mask_24 whenever the fp32 block sums are exact,
e.g. always for 16-bit magnitudes within 2**16 of each other). `best_pattern_keep` is that scoring, shared
by both kernels. In `transposable_compress` the 64x64 tile's mask is written, then (after a block barrier,
reading W and the mask back from L1/L2) the tile is packed twice by the compress building blocks: rows of
W, and rows of W^T. Given a mask (e.g. the exact fp32 mask of a master weight, packing its 16-bit cast),
`transposable_compress` skips the scoring and packs W and W^T under that mask in the same single launch.
The `refresh_*` forms take the previous mask and rewrite it in place, counting the entries that change in the
same pass (a mask refresh's flip count without reading both masks again).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sparse_core._checks import check_no_nan
from sparse_core.kernels._triton import has_triton, interpreting, require_launch
from sparse_core.kernels.compress import _operand_view
from sparse_core.kernels.cslt_layout import NIBBLE_TABLE32, new_packed, torch_pack_24
from sparse_core.masks import replace_mask, transposable_mask_24, transposable_patterns

__all__ = ["transposable_mask", "torch_transposable_mask", "transposable_compress", "torch_transposable_compress",
           "refresh_transposable_mask", "torch_refresh_transposable_mask", "refresh_transposable_compress",
           "torch_refresh_transposable_compress"]

MASK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # weights transposable_mask accepts
_MASK_TILE_ROWS = (64, 32, 16)  # rows of W per program of the mask kernel (x 64 columns), tuned on CUDA
_MASK_WARPS = (2, 4, 8)  # warp counts the mask kernel is tuned over

if has_triton():
    import triton
    import triton.language as tl

    from sparse_core.kernels._pack import pack_cols_tile, pack_rows_tile, to_float

    @triton.jit
    def block_offsets(cols, BR: tl.constexpr):
        """(BR/4 * 16, 16) offsets in a row-major W (`cols` wide) of the aligned 4x4 blocks of a BR x 64
        tile, one block per row, its entries in row-major order (bit k of a pattern code = entry k)."""
        b = tl.arange(0, BR * 4)  # BR/4 x 16 blocks of the tile
        k = tl.arange(0, 16)  # 4 x 4 entries of a block
        return ((b // 16) * 4 * cols + (b % 16) * 4)[:, None] + ((k // 4) * cols + k % 4)[None, :]

    @triton.jit
    def tf32_part(x):
        """float32 x truncated to its top 11 significant bits: exactly representable in tf32."""
        return (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)

    @triton.jit
    def best_pattern_keep(a, p_ptr, pb_ptr, PRECISION: tl.constexpr):
        """(NB, 16) float32 |4x4 blocks| -> (NB, 16) uint8 keep flags of each block's best pattern.

        tl.dot scores all blocks against the 90 patterns (p_ptr: 16 x 128, columns 90.. zero); argmax ties go
        to the lowest index. PRECISION "tf32": one tensor-core product (exact for 16-bit magnitudes); "split"
        (float32 magnitudes): |w| = hi + mid + lo, each part exact in tf32 (11 + 11 + 2 of fp32's 24 significant
        bits), three tensor-core products of exact 0/1 weights summed in fp32. NaN magnitudes count as 0 and the
        index is capped at 89, so blocks with NaN/inf still get a valid pattern.
        """
        k = tl.arange(0, 16)
        pats = tl.load(p_ptr + k[:, None] * 128 + tl.arange(0, 128)[None, :])
        a = tl.where(a == a, a, 0.0)
        if PRECISION == "split":
            hi = tf32_part(a)
            rest = tl.where(hi < float("inf"), a - hi, 0.0)  # exact: at most 13 significant bits
            mid = tf32_part(rest)
            scores = tl.dot(rest - mid, pats, input_precision="tf32")  # (NB, 128), fp32 accumulation
            scores = tl.dot(mid, pats, scores, input_precision="tf32")
            scores = tl.dot(hi, pats, scores, input_precision="tf32")
        else:
            scores = tl.dot(a, pats, input_precision=PRECISION)
        best = tl.minimum(tl.argmax(scores, axis=1, tie_break_left=True), 89)
        pb = tl.load(pb_ptr + best)
        return ((pb[:, None] >> k[None, :]) & 1).to(tl.uint8)

    @triton.jit
    def count_flips(old_ptrs, keep, f_ptr):
        """Adds to the int64 at f_ptr how many of the previous mask's flags at old_ptrs differ from keep; the
        barrier lets the caller overwrite them (all of the program's reads are done before any thread writes)."""
        tl.atomic_add(f_ptr, tl.sum((tl.load(old_ptrs) != keep).to(tl.int64)))
        tl.debug_barrier()

    @triton.jit
    def _transposable_kernel(x_ptr, p_ptr, pb_ptr, m_ptr, f_ptr, out_ptr, outt_ptr, rows, cols,
                             TABLE: tl.constexpr, IS_BF16: tl.constexpr, SCORE: tl.constexpr, FLIPS: tl.constexpr):
        r0 = tl.program_id(0) * 64
        c0 = tl.program_id(1) * 64
        if SCORE:  # else the mask at m_ptr is given
            off = block_offsets(cols, 64)
            base = r0.to(tl.int64) * cols + c0
            a = tl.abs(to_float(tl.load(x_ptr + base + off), IS_BF16))  # exact in tf32: 16-bit inputs fit its mantissa
            keep = best_pattern_keep(a, p_ptr, pb_ptr, "tf32")
            if FLIPS:
                count_flips(m_ptr + base + off, keep, f_ptr)
            tl.store(m_ptr + base + off, keep)
            tl.debug_barrier()  # the tile's mask is read back by other threads of this program
        pack_rows_tile(x_ptr, cols, m_ptr, cols, m_ptr, cols, out_ptr, rows, cols, r0, c0,
                       0, False, 64, TABLE)
        pack_cols_tile(x_ptr, cols, m_ptr, cols, m_ptr, cols, x_ptr, outt_ptr, x_ptr, cols, rows, c0, r0, 0,
                       0, False, False, False, 64, TABLE, IS_BF16)

    @triton.jit
    def _mask_kernel(x_ptr, p_ptr, pb_ptr, m_ptr, f_ptr, nan_ptr, cols, BR: tl.constexpr, PRECISION: tl.constexpr,
                     FLIPS: tl.constexpr):
        off = block_offsets(cols, BR)
        base = (tl.program_id(0) * BR).to(tl.int64) * cols + tl.program_id(1) * 64
        a = tl.abs(tl.load(x_ptr + base + off).to(tl.float32))
        keep = best_pattern_keep(a, p_ptr, pb_ptr, PRECISION)
        if FLIPS:
            count_flips(m_ptr + base + off, keep, f_ptr)
        tl.store(m_ptr + base + off, keep)
        if tl.max((a != a).to(tl.int32)) > 0:  # NaN: flagged, refused by the caller
            tl.atomic_max(nan_ptr, 1)

    _mask_tuned = triton.autotune(
        configs=[triton.Config({"BR": br}, num_warps=w) for br in _MASK_TILE_ROWS for w in _MASK_WARPS],
        key=["cols", "PRECISION"],
        restore_value=["m_ptr"], reset_to_zero=["f_ptr"],  # trials must not see each other's in-place refresh
        do_bench=lambda call, quantiles: triton.testing.do_bench(call, warmup=5, rep=20, quantiles=quantiles),
    )(_mask_kernel)


@lru_cache(maxsize=None)
def _pattern_operands(device: str) -> tuple[torch.Tensor, torch.Tensor]:
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


def _mask_weight_error(w: object) -> Exception | None:
    """The error transposable_mask raises for `w`, or None when it accepts w."""
    if not isinstance(w, torch.Tensor):
        return TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in MASK_DTYPES:
        return TypeError(f"transposable_mask needs w of dtype float32, bfloat16 or float16, got {w.dtype}")
    if w.dim() != 2 or w.shape[0] % 64 or w.shape[1] % 64 or w.numel() == 0:
        return ValueError(f"transposable_mask needs a 2-D w with both dims positive multiples of 64, "
                          f"got shape {tuple(w.shape)}")
    if not w.is_contiguous():
        return ValueError(f"transposable_mask needs a contiguous w, got strides {w.stride()} for shape {tuple(w.shape)}")
    return None


def accepts_mask_weight(w: torch.Tensor) -> bool:
    """Whether transposable_mask takes `w` (dtype, shape, layout; not whether it can launch on w's device)."""
    return _mask_weight_error(w) is None


def _check_mask_arg(mask: object, w: torch.Tensor, what: str) -> torch.Tensor:
    """`mask` as a contiguous bool tensor of w's shape on w's device, else a clear error naming `what`."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{what} must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != w.shape or mask.device != w.device or not mask.is_contiguous():
        raise ValueError(f"{what} must be a contiguous {tuple(w.shape)} bool tensor on {w.device}, got "
                         f"{tuple(mask.shape)} on {mask.device} (contiguous={mask.is_contiguous()})")
    return mask


def _launch_mask(w: torch.Tensor, mask: torch.Tensor, flips: torch.Tensor | None, check_nan: bool) -> None:
    """The mask kernel on a checked w: W's mask into `mask`; with `flips`, the changes from the mask it replaces
    are added there."""
    require_launch(w, "transposable_mask")
    rows, cols = w.shape
    pats, codes = _pattern_operands(str(w.device))
    nan = torch.zeros(1, dtype=torch.int32, device=w.device)
    precision = "split" if w.dtype == torch.float32 else "tf32"
    args = (w, pats, codes, mask.view(torch.uint8), nan if flips is None else flips, nan, cols)
    if interpreting():
        br = _MASK_TILE_ROWS[0]
        _mask_kernel[(rows // br, cols // 64)](*args, BR=br, PRECISION=precision, FLIPS=flips is not None)
    else:
        _mask_tuned[lambda meta: (rows // meta["BR"], cols // 64)](*args, PRECISION=precision, FLIPS=flips is not None)
    if check_nan and nan.item():
        check_no_nan(w, "w")  # raises, naming how many entries are NaN


def transposable_mask(w: torch.Tensor, check_nan: bool = True) -> torch.Tensor:
    """Exact transposable 2:4 bool mask of a 2-D float32/bfloat16/float16 `w` (dims multiples of 64).

    Equals masks.transposable_mask_24(w) whenever the fp32 block sums are exact (always for 16-bit w
    within 2**16 of range, for integer or dyadic w); for general fp32 w the two can differ only where two
    patterns' sums differ by fp32 rounding (the summation orders differ). Always a valid transposable mask.
    NaN weights are refused (ValueError), like the torch rule; check_nan=False skips that check and its host
    sync (NaN magnitudes then count as 0, the mask stays valid). 16-bit magnitudes are scored by one tf32
    tensor-core product (exact for them); float32 ones are split into three tf32-exact parts, scored by three
    such products and summed in fp32 (exact products: plain tf32 would round the magnitudes).
    """
    error = _mask_weight_error(w)
    if error is not None:
        raise error
    mask = torch.empty(w.shape, dtype=torch.bool, device=w.device)
    _launch_mask(w, mask, None, check_nan)
    return mask


def refresh_transposable_mask(w: torch.Tensor, mask: torch.Tensor, check_nan: bool = True) -> torch.Tensor:
    """Rewrites `mask` (the previous mask: bool, w's shape, contiguous) in place with transposable_mask(w) and
    returns how many entries changed (0-d int64 on w's device), counted in the same pass: no second read of
    both masks, no host sync."""
    error = _mask_weight_error(w)
    if error is not None:
        raise error
    _check_mask_arg(mask, w, "mask")
    flips = torch.zeros((), dtype=torch.int64, device=w.device)
    _launch_mask(w, mask, flips, check_nan)
    torch.autograd.graph.increment_version(mask)  # written in place, as an in-place torch op would record
    return flips


def torch_transposable_mask(w: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of `transposable_mask` (same input rules): masks.transposable_mask_24."""
    error = _mask_weight_error(w)
    if error is not None:
        raise error
    return transposable_mask_24(w)


def torch_refresh_transposable_mask(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of `refresh_transposable_mask`."""
    new = torch_transposable_mask(w)
    return replace_mask(_check_mask_arg(mask, w, "mask"), new)


def _launch_compress(w: torch.Tensor, mask: torch.Tensor, score: bool,
                     flips: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel on a checked w: (compressed w, compressed w.T); with `score`, W's mask is written to
    `mask` first (with `flips`, counting the changes from the mask it replaces)."""
    require_launch(w, "transposable_compress")
    rows, cols = w.shape
    pats, codes = _pattern_operands(str(w.device))
    out = new_packed(rows, cols, w.dtype, w.device)
    out_t = new_packed(cols, rows, w.dtype, w.device)
    m8 = mask.view(torch.uint8)
    # scoring runs best with 2 warps, packing alone with 8 (H200, 16384 x 4096: 0.37 vs 0.62 ms; 0.17 vs 0.30 ms)
    _transposable_kernel[(rows // 64, cols // 64)](
        w.view(torch.int16), pats, codes, m8, m8 if flips is None else flips, out.view(torch.int16),
        out_t.view(torch.int16), rows, cols, TABLE=NIBBLE_TABLE32, IS_BF16=w.dtype == torch.bfloat16, SCORE=score,
        FLIPS=flips is not None, num_warps=2 if score else 8)
    return out, out_t


def transposable_compress(
    w: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(compressed w, compressed w.T, bool mask) under the exact transposable 2:4 mask of w (NaN-free), or
    under the given transposable `mask` (w's shape; e.g. transposable_mask of an fp32 master weight), which
    is then returned as it is. One launch either way."""
    _check_weight(w)
    score = mask is None
    if score:
        mask = torch.empty(w.shape, dtype=torch.bool, device=w.device)
    else:
        _check_mask_arg(mask, w, "mask")
    out, out_t = _launch_compress(w, mask, score, None)
    return out, out_t, mask


def refresh_transposable_compress(
    w: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A mask refresh in one launch: rewrites `mask` (the previous mask: bool, w's shape, contiguous) in place
    with w's exact transposable mask and returns (compressed w, compressed w.T, entries changed as a 0-d int64)."""
    _check_weight(w)
    _check_mask_arg(mask, w, "mask")
    flips = torch.zeros((), dtype=torch.int64, device=w.device)
    out, out_t = _launch_compress(w, mask, True, flips)
    torch.autograd.graph.increment_version(mask)  # written in place, as an in-place torch op would record
    return out, out_t, flips


def torch_transposable_compress(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch twin: transposable_mask_24 + torch_pack_24 both ways."""
    _check_weight(w)
    m = transposable_mask_24(w)
    return torch_pack_24(w, m), torch_pack_24(w.t().contiguous(), m.t().contiguous()), m


def torch_refresh_transposable_compress(
    w: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch twin of `refresh_transposable_compress`."""
    out, out_t, new = torch_transposable_compress(w)
    return out, out_t, replace_mask(_check_mask_arg(mask, w, "mask"), new)
