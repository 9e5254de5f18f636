"""What a SparseLinear backend provides: the three products of a linear layer with a 2:4 weight.

Y = X W_f^T + b (forward), dX = dY W_b (backward through the weight), dW = S(dY)^T X (weight gradient,
S = MVUE 2:4 along tokens or identity). A backend turns the per-step weights into whatever operands
its GEMMs need once (`prepare`), so every micro-batch of an optimizer step reuses them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SparseOperands:
    """The weights of one optimizer step, in the compute dtype, plus the masks that made them."""

    w_fwd: torch.Tensor  # (out, in), zero outside mask_fwd
    mask_fwd: torch.Tensor  # (out, in) bool, 2:4 along `in`
    w_bwd: torch.Tensor  # (out, in), the weight dX = dY W_b uses (w_fwd unless the method differs)
    mask_bwd: torch.Tensor  # (out, in) bool
    transposable: bool  # mask_bwd is 2:4 along `out` too, so W_b^T can be a sparse operand


class Backend(abc.ABC):
    """A way to run SparseLinear's products; registered by name in `sparse_core.backends`."""

    name: str = ""

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        """None when this backend can run on `device`, else a sentence saying why not."""
        return None

    @abc.abstractmethod
    def prepare(self, ops: SparseOperands) -> Any:
        """Build the operands the products need; called once per weight or mask change."""

    def refresh_and_prepare(self, weight: torch.Tensor, dtype: torch.dtype,
                            mask: torch.Tensor) -> tuple[torch.Tensor, Any] | None:
        """A mask refresh in one fused pass: `mask` (the layer's transposable mask) rewritten in place with
        weight's new one; returns (entries changed as a 0-d tensor, the operands `prepare` would build for
        weight*mask in `dtype`), or None when this backend has no such pass for this weight (then: mask rule +
        `prepare`)."""
        return None

    @abc.abstractmethod
    def linear(self, x: torch.Tensor, plan: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Y = X W_f^T (+ bias, in X's dtype) for 2-D X (tokens, in); the bias rides in the GEMM's epilogue."""

    @abc.abstractmethod
    def grad_input(self, dy: torch.Tensor, plan: Any) -> torch.Tensor:
        """dX = dY W_b for 2-D dY (tokens, out)."""

    def grad_weight_and_bias(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(dW, db = dY summed over tokens); a backend may make db in a pass over dY it makes anyway."""
        return self.grad_weight(dy, x, mvue, generator), dy.sum(0)

    @abc.abstractmethod
    def grad_weight(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """dW = S(dY^T) X, S = MVUE 2:4 along tokens when `mvue`, else the identity."""
