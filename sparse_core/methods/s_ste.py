"""S-STE (Hu et al., "S-STE: Continuous Pruning Function for Efficient 2:4 Sparse Pre-training",
NeurIPS 2024, arXiv 2409.09099).

Forward weight = beta * S(W): per group of 4 along in-features, the 3rd-largest |w| is subtracted from
the two largest (a soft threshold: continuous in W, always 2:4), times one per-tensor scale
beta = <W, S(W)> / <S(W), S(W)> computed once at the start and then fixed. The gradient reaches the
dense W straight through; no masked decay.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sparse_core.methods.base import SparseMethod, register_method

if TYPE_CHECKING:
    from sparse_core.controller import SparseController


def soft_threshold_24(w: torch.Tensor) -> torch.Tensor:
    """S(w): sign(w) * max(|w| - t, 0) with t the 3rd-largest |w| of each group of 4 along the last dim."""
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // 4, 4)
    t = groups.abs().sort(dim=-1, descending=True).values[..., 2:3]
    return (groups.sign() * (groups.abs() - t).clamp_min(0)).reshape(w.shape)


def sste_scale(w: torch.Tensor) -> torch.Tensor:
    """beta = <W, S(W)> / <S(W), S(W)> (1 if S(W) is all zero)."""
    s = soft_threshold_24(w.detach().float())
    denom = (s * s).sum()
    return torch.where(denom > 0, (w.detach().float() * s).sum() / denom.clamp_min(1e-30), torch.ones(()))


class _ScaledSoftThreshold:
    """SparseLinear weight transform: beta * S(W), with beta read from the layer's buffer."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.layer = layer

    def __call__(self, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layer.sste_scale.to(weight.dtype) * soft_threshold_24(weight) * mask


@register_method
@dataclass
class SSTE(SparseMethod):
    name = "s-ste"
    description = "soft-threshold 2:4 weights (continuous pruning) times a per-tensor scale fixed at the start"
    reference = "Hu et al., S-STE, NeurIPS 2024 (arXiv 2409.09099)"

    def validate(self, total_steps: int | None) -> None:
        super().validate(total_steps)
        if self.mask_kind != "magnitude":
            raise ValueError(f"s-ste: the soft threshold is row-wise; got mask_kind={self.mask_kind!r}")
        if self.mask_refresh_interval != 1:  # the CPU demo configs refresh every 10 steps for every method
            warnings.warn(f"s-ste: the soft threshold follows the weights every step, but the mask is refreshed every "
                          f"{self.mask_refresh_interval} steps: between refreshes the forward weight is beta S(W) "
                          "cut to a stale mask, not S-STE's continuous function; use mask_refresh_interval=1")

    def setup(self, ctl: "SparseController") -> None:
        for layer in ctl.layers.values():
            layer.register_buffer("sste_scale", sste_scale(layer.weight).to(layer.weight.device), persistent=True)
            layer.weight_transform = _ScaledSoftThreshold(layer)
