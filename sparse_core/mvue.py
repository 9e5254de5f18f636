"""Unbiased stochastic 2:4 sparsification of gradients (MVUE-style, Horvitz-Thompson weighted).

Reference: Hu et al. 2024 (arXiv 2404.01847), Sec. 4.2, after Chmiel et al., "Minimum Variance
Unbiased N:M Sparsity for the Neural Gradients" (ICLR 2023). Per group of 4, two distinct indices are
drawn without replacement with probability proportional to |x|; each kept value is divided by its
inclusion probability, so E[out] = x. This lets dW = dY^T X run as a 2:4 sparse GEMM.
"""

from __future__ import annotations

import torch

from sparse_core._checks import check_float_tensor, check_group_dim

__all__ = ["mvue_24", "inclusion_probabilities"]


def inclusion_probabilities(a: torch.Tensor) -> torch.Tensor:
    """P(index i is one of the two drawn) for groups a (..., 4) of non-negative weights.

    pi_i = p_i + sum_{j != i} p_j * a_i / (S - a_j) with p = a / S; zero where a_i = 0.
    """
    total = a.sum(-1, keepdim=True)
    p = torch.where(total > 0, a / total.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
    # S - a_j summed from the other three entries, not subtracted: S - a_j rounds to 0 in float32 when a_j
    # dominates its group by ~2**24, which would inflate the small entries' kept values
    a0, a1, a2, a3 = a.unbind(-1)  # elementwise sums, not a matmul: TF32/bf16 matmul modes would round them
    rest = torch.stack([a1 + a2 + a3, a0 + a2 + a3, a0 + a1 + a3, a0 + a1 + a2], -1)  # > 0 if another entry is
    second = torch.where(rest > 0, p / rest.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
    # sum over j != i of p_j / (S - a_j), times a_i
    cross = (second.sum(-1, keepdim=True) - second) * a
    return torch.where(a > 0, p + cross, torch.zeros_like(a))


def _draw(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One-hot (..., 4) of an index drawn by inverse CDF from weights w (..., 4) with uniforms u (...).

    Written with elementwise ops only (no scan or one_hot over the size-4 dim), which keeps it fast on GPUs.
    """
    c0 = w[..., 0]
    c1 = c0 + w[..., 1]
    c2 = c1 + w[..., 2]
    v = u * (c2 + w[..., 3])
    idx = (c0 <= v).to(torch.uint8) + (c1 <= v) + (c2 <= v)  # never lands on a zero-weight entry ...
    last = torch.where(w[..., 3] > 0, 3, torch.where(w[..., 2] > 0, 2, torch.where(w[..., 1] > 0, 1, 0)))
    idx = torch.minimum(idx, last.to(torch.uint8))  # ... nor past the last positive one (u * total rounding up)
    return idx.unsqueeze(-1) == torch.arange(4, device=w.device, dtype=torch.uint8)


def mvue_24(x: torch.Tensor, dim: int = -1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased 2:4 sparsification of `x` along `dim` (E[out] = x); all-zero groups stay zero.

    Randomness comes from `generator` (or the default generator of x's device). Arithmetic runs in
    float32 (float64 for float64 input) so large 16-bit values cannot overflow; non-finite input
    stays non-finite so that loss scalers still see the overflow.
    """
    check_float_tensor(x, "x")
    dim = check_group_dim(x, dim, "x")
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    moved = x.movedim(dim, -1)
    g = moved.reshape(*moved.shape[:-1], moved.shape[-1] // 4, 4).to(work_dtype)
    a = g.abs()
    total = a.sum(-1, keepdim=True)
    u = torch.rand((*a.shape[:-1], 2), generator=generator, device=x.device, dtype=work_dtype)

    first_hot = _draw(torch.where(total > 0, a, torch.ones_like(a)), u[..., 0])
    remaining = torch.where(first_hot, torch.zeros_like(a), a)
    # When only the first pick is non-zero, the second is drawn uniformly among the zero entries:
    # it keeps a zero, so its value does not matter, only that two distinct indices are kept.
    uniform = (~first_hot).to(work_dtype)
    second_w = torch.where(remaining.sum(-1, keepdim=True) > 0, remaining, uniform)
    keep = first_hot | _draw(second_w, u[..., 1])

    pi = inclusion_probabilities(a)
    out = torch.where(keep & (a > 0), g / torch.where(pi > 0, pi, torch.ones_like(pi)), torch.zeros_like(g))
    out = torch.where(torch.isfinite(total), out, g * float("nan"))  # keep overflow visible
    return out.reshape(moved.shape).to(x.dtype).movedim(-1, dim)
