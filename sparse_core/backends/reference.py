"""Plain-torch backend: dense GEMMs on masked weights, any device and dtype; the ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparse_core.backends.base import Backend, SparseOperands
from sparse_core.mvue import mvue_24


def mvue_tokens(dy: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """MVUE 2:4 of dY^T along tokens, returned as (out, tokens); a token count not divisible by 4
    is zero-padded, which keeps the estimate unbiased (zero groups stay zero)."""
    tokens = dy.shape[0]
    pad = (-tokens) % 4
    dyt = dy.t()
    if pad:
        dyt = F.pad(dyt, (0, pad))
    return mvue_24(dyt, dim=1, generator=generator)[:, :tokens]


class ReferenceBackend(Backend):
    name = "reference"

    def prepare(self, ops: SparseOperands) -> SparseOperands:
        return ops

    def linear(self, x: torch.Tensor, plan: SparseOperands, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, plan.w_fwd, bias)

    def grad_input(self, dy: torch.Tensor, plan: SparseOperands) -> torch.Tensor:
        return dy @ plan.w_bwd

    def grad_weight(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        dyt = mvue_tokens(dy, generator) if mvue else dy.t()
        return dyt @ x
