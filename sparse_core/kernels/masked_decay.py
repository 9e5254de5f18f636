"""Masked decay on gradients, fused: grad += lam * (1 - M) * W (SR-STE / 2by4 decay of pruned weights).

M is the bool mask the layer keeps (SparseLinear.mask, 1 byte per entry); arithmetic in float32.
"""

from __future__ import annotations

import torch

from sparse_core.kernels._triton import has_triton, require_launch

__all__ = ["masked_decay_", "torch_masked_decay_"]

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _masked_decay_kernel(g_ptr, w_ptr, m_ptr, n, lam, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=ok, other=1)
        g = tl.where(m != 0, g, g + lam * w)
        tl.store(g_ptr + offs, g.to(g_ptr.dtype.element_ty), mask=ok)


def _check(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, lam: float) -> None:
    for name, t in (("grad", grad), ("weight", weight), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.shape != grad.shape or t.device != grad.device:
            raise ValueError(f"{name} has shape {tuple(t.shape)} on {t.device}, grad has {tuple(grad.shape)} on {grad.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if not grad.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"grad and weight must be floating, got {grad.dtype} and {weight.dtype}")
    if not isinstance(lam, (int, float)) or isinstance(lam, bool):
        raise TypeError(f"lam must be a float, got {type(lam).__name__}")


def masked_decay_(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """grad += lam * (1 - mask) * weight, in place, one pass; returns grad."""
    _check(grad, weight, mask, lam)
    require_launch(grad, "masked_decay_")
    n = grad.numel()
    block = 4096
    _masked_decay_kernel[(triton.cdiv(n, block),)](grad, weight, mask.view(torch.uint8), n, float(lam), BLOCK=block)
    return grad


def torch_masked_decay_(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """Plain-torch twin of `masked_decay_`."""
    _check(grad, weight, mask, lam)
    decayed = grad.float() + float(lam) * weight.float()
    grad.copy_(torch.where(mask, grad.float(), decayed).to(grad.dtype))
    return grad
