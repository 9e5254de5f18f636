"""The timed modules: FFN (Linear-GELU-Linear and gated), pre-LN transformer block, in three flavours.

Flavours ('variants'): 'dense' (nn.Linear), 'sc-<products>' (SparseLinear, transposable mask, on the
cuSPARSELt backend of that name; 'sc-fwd-dx-mvue' adds the MVUE estimate of dY^T with a dense dW GEMM, 'sc-all'
also makes that dW GEMM sparse), 'semi' (PyTorch's plain
`to_sparse_semi_structured` weight, frozen: forward, and backward for dX only).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparse_core.linear import SparseLinear

SPARSE_VARIANTS = {  # variant -> (cuSPARSELt backend name, mvue)
    "sc-fwd": ("cusparselt-fwd", False),
    "sc-fwd-dx": ("cusparselt-fwd-dx", False),
    "sc-fwd-dx-mvue": ("cusparselt-fwd-dx", True),  # dense dW GEMM on the fused MVUE of dY^T
    "sc-all": ("cusparselt-all", True),  # what 2by4 training runs on backend 'auto' with the fused kernels
}
VARIANTS = ("dense", *SPARSE_VARIANTS, "semi")


class FFN(nn.Module):
    """Linear(d, h) - GELU - Linear(h, d); gated: (GELU(x W_g^T) * x W_u^T) W_d^T with W_g, W_u fused."""

    def __init__(self, d: int, hidden: int, gated: bool = False) -> None:
        super().__init__()
        self.gated = gated
        self.fc1 = nn.Linear(d, 2 * hidden if gated else hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.gelu(gate, approximate="tanh") * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.fc2(h)


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x)); causal SDPA attention."""

    def __init__(self, d: int, n_head: int, hidden: int) -> None:
        super().__init__()
        if d % n_head:
            raise ValueError(f"d={d} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ffn = FFN(d, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, seq, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))  # (b, h, t, hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.ffn(self.ln2(x))


def ffn_linears(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every FFN linear in `model` (the layers the project sparsifies)."""
    return [(m, name) for m in model.modules() if isinstance(m, FFN) for name in ("fc1", "fc2")]


def apply_variant(model: nn.Module, variant: str) -> nn.Module:
    """Swap the FFN linears of `model` in place for `variant`; returns the model."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    for parent, name in ffn_linears(model):
        lin = getattr(parent, name)
        if variant in SPARSE_VARIANTS:
            backend, mvue = SPARSE_VARIANTS[variant]
            setattr(parent, name, SparseLinear.from_dense(lin, mask_kind="transposable", mvue=mvue, backend=backend))
        elif variant == "semi":
            from torch.sparse import to_sparse_semi_structured

            w = lin.weight.detach()
            g = w.reshape(-1, 4).abs().topk(2, dim=1).indices
            keep = torch.zeros_like(w.reshape(-1, 4), dtype=torch.bool).scatter_(1, g, True).reshape(w.shape)
            lin.weight = nn.Parameter(to_sparse_semi_structured(w * keep), requires_grad=False)
    return model


def sparse_layers(model: nn.Module) -> list[SparseLinear]:
    return [m for m in model.modules() if isinstance(m, SparseLinear)]


def refresh_step(layers: list[SparseLinear], dtype: torch.dtype) -> None:
    """An optimizer step's mask refresh as the controller runs it: the backend's fused mask + compression where it
    has one (flip counts left on the GPU, no host sync per layer), then the next forward's operands."""
    for m in layers:
        m.refresh_mask_async()
        m.plan(dtype)
