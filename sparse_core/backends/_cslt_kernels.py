"""Adapter from sparse_core.kernels (Triton, writes cuSPARSELt's layout directly) to the cuSPARSELt backend.

The kernels are used only after a one-time check, per dtype, that they give bytes identical to
`torch._cslt_compress` on this machine (the layout is not a published interface); otherwise the
backend keeps `torch._cslt_compress` and says why in a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class KernelSet:
    """Fused compressors: `compress(a, mask, transpose)` and `mvue_t(dy, seed)` -> packed operand
    (`mvue_t(dy, seed, return_sum=True)` -> (packed, dy.sum(0))); `mvue_dense_t(dy, seed)` -> the same MVUE
    estimate of dY^T uncompressed (for a dense dW GEMM)."""

    compress: Callable[..., torch.Tensor]
    mvue_t: Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
    mvue_dense_t: Callable[[torch.Tensor, int], torch.Tensor]
    verified: dict = field(default_factory=dict)  # dtype -> bool

    def check(self, dtype: torch.dtype, device: torch.device) -> bool:
        """Byte-compare the fused compress with torch._cslt_compress once per dtype."""
        if dtype not in self.verified:
            self.verified[dtype] = _same_bytes(self.compress, dtype, device)
            if not self.verified[dtype]:
                warnings.warn(f"sparse_core.kernels.compress_24 differs from torch._cslt_compress for {dtype} on "
                              f"this stack; the cusparselt backend uses torch._cslt_compress instead", stacklevel=3)
        return self.verified[dtype]


def _same_bytes(compress: Callable, dtype: torch.dtype, device: torch.device) -> bool:
    g = torch.Generator(device=device).manual_seed(1234)
    a = torch.randn(128, 256, device=device, dtype=dtype, generator=g)
    keep = torch.zeros(128 * 64, 4, device=device, dtype=torch.bool)
    keep.scatter_(1, a.abs().reshape(-1, 4).topk(2, dim=1).indices, True)
    keep = keep.reshape(128, 256)
    masked = (a * keep).contiguous()
    ref = torch._cslt_compress(masked).view(torch.int16)
    direct = compress(masked, keep, transpose=False).view(torch.int16)
    # the same operand read through a transpose: dense = masked^T (256 x 128), transpose=True
    through_t = compress(masked.t().contiguous(), keep.t().contiguous(), transpose=True).view(torch.int16)
    return all(t.shape == ref.shape and torch.equal(t, ref) for t in (direct, through_t))


def kernel_set() -> KernelSet | None:
    """The fused kernels, or None when sparse_core.kernels or triton is missing."""
    try:
        from sparse_core.kernels import compress_24, has_triton, mvue_24_t, mvue_compress_t
    except ImportError:
        return None
    if not has_triton():
        return None
    return KernelSet(compress=compress_24, mvue_t=mvue_compress_t, mvue_dense_t=mvue_24_t)
