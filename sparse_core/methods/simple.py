"""Methods that only set options of the shared dynamics: dense, half, ste, sr-ste, 2by4."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparse_core.methods.base import SparseMethod, register_method


@register_method
@dataclass
class Dense(SparseMethod):
    name = "dense"
    description = "plain dense training (baseline); no layer is swapped"
    reference = "-"
    swaps_layers = False


@register_method
@dataclass
class Half(SparseMethod):
    name = "half"
    description = "dense FFN with half the hidden width (same FFN FLOPs as 2:4); a model-construction choice"
    reference = "Hu et al. 2024, Sec. 6 baseline"
    swaps_layers = False


@register_method
@dataclass
class STE(SparseMethod):
    name = "ste"
    description = "2:4 magnitude mask each step, straight-through gradient to the dense weight"
    reference = "Bengio et al. 2013; Zhou et al. 2021 (arXiv 2102.04010)"


@register_method
@dataclass
class SRSTE(SparseMethod):
    name = "sr-ste"
    description = "STE + sparse-refined masked decay applied to the weights (lambda 2e-4)"
    reference = "Zhou et al., Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch, ICLR 2021"
    decay: str = "weight"
    lambda_w: Any = 2e-4


@register_method
@dataclass
class TwoByFour(SparseMethod):
    name = "2by4"
    description = ("transposable mask + MVUE dW + masked decay on gradients, lambda chosen in warm-up, "
                   "dense fine-tuning for the last 1/6")
    reference = "Hu et al., Accelerating Transformer Pre-training with 2:4 Sparsity, ICML 2024 (arXiv 2404.01847)"
    mask_kind: str = "transposable"
    mvue: bool = True
    # every step: on GPT-2 124M a mask kept for 40 steps flipped ~11% of entries per refresh and ended 0.24
    # nats behind refreshing every step (results/nanogpt/README.md); the fused mask kernel makes it cheap
    mask_refresh_interval: int = 1
    decay: str = "gradient"
    lambda_w: Any = "auto"
    dense_ft_fraction: Any = 5 / 6
