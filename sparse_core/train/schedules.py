"""Learning-rate schedules as pure functions of the step, and `set_lr` to apply one."""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine_lr", "one_cycle_lr", "set_lr"]


def _check(name: str, value: float, low: float = 0.0, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def warmup_cosine_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warm-up to `base_lr` over `warmup_steps` ((step+1)/warmup), cosine to `min_lr` at `total_steps`."""
    _check("step", step)
    _check("base_lr", base_lr)
    _check("min_lr", min_lr, 0.0, base_lr)
    _check("total_steps", total_steps, 1)
    _check("warmup_steps", warmup_steps, 0, total_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def one_cycle_lr(step: float, *, base_lr: float, total_steps: float, warmup_fraction: float,
                 final_fraction: float) -> float:
    """Triangle (Cramming's budget schedule): 0 -> `base_lr` linearly over the first `warmup_fraction` of
    the budget, then linearly down to `final_fraction * base_lr` at `total_steps`.

    `step`/`total_steps` may be floats, e.g. elapsed seconds against a time budget.
    """
    _check("step", step)
    _check("base_lr", base_lr)
    _check("total_steps", total_steps, 1e-12)
    _check("warmup_fraction", warmup_fraction, 0.0, 1.0)
    _check("final_fraction", final_fraction, 0.0, 1.0)
    t = min(step / total_steps, 1.0)
    if t < warmup_fraction:
        return base_lr * t / warmup_fraction
    if warmup_fraction == 1.0:
        return base_lr
    down = (t - warmup_fraction) / (1.0 - warmup_fraction)  # 0 -> 1
    return base_lr * (1.0 - down * (1.0 - final_fraction))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's lr to `lr` times the group's optional `lr_scale` (layer-wise decay)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
