"""cuSPARSELt's compressed 2:4 operand for 16-bit dtypes, in plain torch (runs on CPU).

This is the reference the Triton kernels are checked against bit for bit, and that the GPU tests check
against `torch._cslt_compress`. Layout (read off cuSPARSELt 0.8 / torch 2.11, see
shared/h200/CSLT_LAYOUT.md), for an r x c matrix A that is 2:4 along each row:
  1. values: the two kept entries of every group of 4, row-major; r*c/2 elements;
  2. metadata: R*c/16 16-bit words (R = r rounded up to 64), one 4-bit nibble per group,
     nibble = i0 | i1 << 2 for kept positions i0 < i1; rows r..R-1 hold 0xE; 4 nibbles per word,
     lowest bits first; nibbles ordered by 64-row block, then 8-group tile, then 16-row tile, then
     k = 16a + 4q + 2h + s inside the 16x8 tile for row a + 8s, group q + 4h.
A group with fewer than two non-zeros keeps its non-zeros plus its HIGHEST zero positions (all-zero:
positions 2, 3; read off `_cslt_compress` on the H200, 2026-11-30: -0.0 counts as zero); the rule is one
16-entry table, `NIBBLE_OF_NONZEROS`, indexed by the group's non-zero bit pattern. Rows must be a multiple
of 64: at 48 x 96 cuSPARSELt returned a larger buffer (48 x 59, not 48 x 56) whose layout is unverified.
"""

from __future__ import annotations

import torch

__all__ = [
    "NIBBLE_OF_NONZEROS",
    "NIBBLE_TABLE32",
    "PAD_NIBBLE",
    "ROW_MULTIPLE",
    "COL_MULTIPLE",
    "meta_rows",
    "packed_numel",
    "packed_shape",
    "check_packable",
    "new_packed",
    "torch_pack_24",
    "torch_unpack_24",
    "torch_nibbles",
]

PAD_NIBBLE = 0xE
ROW_MULTIPLE = 64  # rows of the sparse operand (1000 is refused; 48 gets an unverified larger buffer)
COL_MULTIPLE = 64  # c % 64 == 32 gets a larger buffer from cuSPARSELt (64x32 -> 64x20, not 64x18), layout unread
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _nibble_for(bits: int) -> int:
    """Nibble of a group whose non-zero positions are the set bits of `bits` (0..15)."""
    nonzero = [i for i in range(4) if bits >> i & 1]
    zero = [i for i in range(4) if not bits >> i & 1][::-1]  # cuSPARSELt fills from the highest zero
    i0, i1 = sorted((nonzero + zero)[:2])
    return i0 | i1 << 2


NIBBLE_OF_NONZEROS: tuple[int, ...] = tuple(_nibble_for(b) for b in range(16))
# The nibble never depends on position 3 (a non-zero there is kept, a zero there is the first filler), so
# kernels read it from one 32-bit word: (NIBBLE_TABLE32 >> 4 * (bits & 7)) & 15.
assert all(NIBBLE_OF_NONZEROS[b] == NIBBLE_OF_NONZEROS[b & 7] for b in range(16))
NIBBLE_TABLE32: int = sum(NIBBLE_OF_NONZEROS[b] << (4 * b) for b in range(8))  # < 2**31


def meta_rows(rows: int) -> int:
    """Rows of the metadata nibble matrix: `rows` rounded up to a multiple of 64."""
    return (rows + 63) // 64 * 64


def packed_numel(rows: int, cols: int) -> int:
    """16-bit elements of the compressed operand: values then metadata words."""
    return rows * cols // 2 + meta_rows(rows) * cols // 16


def packed_shape(rows: int, cols: int) -> tuple[int, int]:
    """The 2-D shape `torch._cslt_compress` gives its buffer: (rows, ceil(numel / rows))."""
    return rows, -(-packed_numel(rows, cols) // rows)


def check_packable(rows: int, cols: int, name: str = "matrix") -> None:
    """Raise ValueError unless an r x c operand fits the layout (rows % 64, cols % 64)."""
    if rows <= 0 or rows % ROW_MULTIPLE:
        raise ValueError(f"{name} has {rows} rows; the compressed operand needs a positive multiple of {ROW_MULTIPLE}")
    if cols <= 0 or cols % COL_MULTIPLE:
        raise ValueError(
            f"{name} has {cols} columns (the 2:4 dim); the compressed operand needs a positive multiple of {COL_MULTIPLE}"
        )


def new_packed(rows: int, cols: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An output buffer of `torch._cslt_compress`'s shape; the tail past packed_numel (if any) is zeroed."""
    shape = packed_shape(rows, cols)
    out = torch.empty(shape, dtype=dtype, device=device)
    tail = shape[0] * shape[1] - packed_numel(rows, cols)
    if tail:
        out.view(-1)[-tail:].zero_()
    return out


def _words_from_nibbles(nib: torch.Tensor) -> torch.Tensor:
    """Metadata words (int16, storage order) from a padded (R, G) int32 nibble matrix."""
    R, G = nib.shape
    t = nib.reshape(R // 64, 4, 2, 8, G // 8, 2, 4)  # rb, rtile, s, a, gtile, h, q
    t = t.permute(0, 4, 1, 3, 6, 5, 2).reshape(-1, 4)  # rb, gtile, rtile, a, q, (h, s)
    words = t[:, 0] | (t[:, 1] << 4) | (t[:, 2] << 8) | (t[:, 3] << 12)
    return torch.where(words >= 32768, words - 65536, words).to(torch.int16)


def check_half_matrix(dense: torch.Tensor, name: str) -> None:
    """Refuse anything but a 2-D float16/bfloat16 tensor (the layout is read off for 16-bit types)."""
    if not isinstance(dense, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(dense).__name__}")
    if dense.dtype not in _HALF_DTYPES:
        raise TypeError(f"{name} must be float16 or bfloat16 (cuSPARSELt 16-bit layout), got {dense.dtype}")
    if dense.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(dense.shape)}")


def _check_dense(dense: torch.Tensor, name: str) -> None:
    check_half_matrix(dense, name)
    check_packable(dense.shape[0], dense.shape[1], name)


def torch_pack_24(dense: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Compressed operand of where(mask, dense, 0) (or of `dense` itself, already 2:4 along rows),
    byte for byte what `torch._cslt_compress` writes. Plain torch, any device."""
    _check_dense(dense, "dense")
    rows, cols = dense.shape
    if mask is not None:
        if mask.shape != dense.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(dense.shape)}, got {mask.dtype} {tuple(mask.shape)}")
        dense = torch.where(mask, dense, torch.zeros((), dtype=dense.dtype, device=dense.device))
    G = cols // 4
    groups = dense.reshape(rows, G, 4)
    nz = (groups != 0).to(torch.int64)
    bits = nz[..., 0] | nz[..., 1] << 1 | nz[..., 2] << 2 | nz[..., 3] << 3
    nib = torch.tensor(NIBBLE_OF_NONZEROS, dtype=torch.int64, device=dense.device)[bits]  # (rows, G)
    pos = torch.stack([nib & 3, nib >> 2], -1)  # (rows, G, 2): i0 < i1
    vals = torch.gather(groups, 2, pos).reshape(-1)
    padded = torch.full((meta_rows(rows), G), PAD_NIBBLE, dtype=torch.int32, device=dense.device)
    padded[:rows] = nib.to(torch.int32)
    flat = torch.cat([vals.view(torch.int16), _words_from_nibbles(padded)])
    out = torch.zeros(packed_shape(rows, cols), dtype=torch.int16, device=dense.device)
    out.view(-1)[: flat.numel()] = flat
    return out.view(dense.dtype)


def torch_nibbles(packed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The (rows, cols/4) metadata nibbles of a compressed operand, as int32 (for checks and probes)."""
    check_packable(rows, cols, "unpacked matrix")
    flat = packed.reshape(-1).view(torch.int16)
    if flat.numel() < packed_numel(rows, cols):
        raise ValueError(f"packed buffer has {flat.numel()} elements, a {rows}x{cols} operand needs {packed_numel(rows, cols)}")
    G, R = cols // 4, meta_rows(rows)
    words = flat[rows * cols // 2 : packed_numel(rows, cols)].to(torch.int32) & 0xFFFF
    nibs = torch.stack([(words >> (4 * k)) & 0xF for k in range(4)], 1)  # (n_words, (h, s))
    t = nibs.reshape(R // 64, G // 8, 4, 8, 4, 2, 2)  # rb, gtile, rtile, a, q, h, s
    return t.permute(0, 2, 6, 3, 1, 5, 4).reshape(R, G)[:rows]


def torch_unpack_24(packed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The dense r x c matrix a compressed operand stands for (zeros at pruned positions)."""
    check_packable(rows, cols, "unpacked matrix")
    flat = packed.reshape(-1).view(torch.int16)
    if flat.numel() < packed_numel(rows, cols):
        raise ValueError(f"packed buffer has {flat.numel()} elements, a {rows}x{cols} operand needs {packed_numel(rows, cols)}")
    G = cols // 4
    vals = flat[: rows * cols // 2].view(packed.dtype).reshape(rows, G, 2)
    nib = torch_nibbles(packed, rows, cols)
    pos = torch.stack([nib & 3, nib >> 2], -1).to(torch.int64)
    out = torch.zeros(rows, G, 4, dtype=packed.dtype, device=packed.device)
    out.scatter_(2, pos, vals)
    return out.reshape(rows, cols)
