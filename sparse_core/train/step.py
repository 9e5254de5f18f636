"""The optimizer step of every recipe, so the sparse controller's two calls sit in one place:

    unscale -> grad norm (clip) -> ctl.before_optimizer_step -> optimizer.step -> zero_grad
            -> ctl.after_optimizer_step

With non-finite gradients nothing is applied: the controller is not called (its statistics would be
poisoned), a GradScaler still steps/updates so it lowers its scale, and the grads are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn

__all__ = ["StepResult", "optimizer_step", "StepController", "decay_param_groups"]


class StepController(Protocol):
    def before_optimizer_step(self, step: int) -> None: ...

    def after_optimizer_step(self, step: int) -> None: ...


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices (linears, embeddings), none on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


@dataclass(frozen=True)
class StepResult:
    grad_norm: float | None  # total L2 norm of the (unscaled, pre-clip) grads; None when no param has a grad
    skipped: bool  # True when the update was not applied (non-finite grads / the scaler skipped it)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, controller: StepController | None = None,
                   scaler: Any = None, clip_norm: float | None = None, step: int,
                   grads_to_none: bool = True) -> StepResult:
    """Apply one optimizer update from the accumulated grads of `model`; `step` = updates done before it.
    grads_to_none=False zeroes the grads in place instead (a CUDA graph accumulates into those tensors)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and 0 < clip_norm < math.inf):
        raise ValueError(f"clip_norm must be a positive finite number or None, got {clip_norm!r}")
    if scaler is not None and not scaler.is_enabled():
        scaler = None  # a disabled GradScaler (bf16/fp32 runs) is a pass-through

    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        norm = None
    elif clip_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    grad_norm = None if norm is None else float(norm)  # .item() sync: needed to skip non-finite steps

    if grad_norm is not None and not math.isfinite(grad_norm):
        if scaler is not None:  # no scaler.step: with finite grads whose norm overflows it would apply the update
            scaler.update()  # consumes unscale_'s inf check: lowers the scale when the grads held an inf / NaN
        optimizer.zero_grad(set_to_none=grads_to_none)
        return StepResult(grad_norm, skipped=True)

    if controller is not None:
        controller.before_optimizer_step(step)
    skipped = False
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=grads_to_none)
    if controller is not None:
        controller.after_optimizer_step(step)
    return StepResult(grad_norm, skipped)
