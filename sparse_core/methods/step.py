"""STEP (Lu et al., "STEP: Learning N:M Structured Sparsity Masks from Scratch with Precondition",
ICML 2023, arXiv 2302.01172).

Phase 1 trains dense with Adam. AutoSwitch watches Adam's second moment v of the sparse weights: every
`check_interval` steps it computes the relative change ||v_t - v_{t-c}||_1 / ||v_{t-c}||_1 and switches
once it falls below `switch_tolerance`, but never before `min_switch_fraction` nor after
`max_switch_fraction` of training (a simpler test than the paper's concentration test of sampled variance
changes: the relative change has a floor set by beta2, so with beta2 <= 0.99 the switch lands on the upper bound,
with 0.999 on the lower one). Phase 2 trains 2:4 (STE) with v frozen at its bias-corrected value
at the switch: before each Adam step, exp_avg_sq is set so that Adam's own update of it lands exactly
on the frozen v (bias correction included; floored where rounding could make it negative),
i.e. the frozen v is the preconditioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sparse_core.methods.base import SparseMethod, register_method

if TYPE_CHECKING:
    from sparse_core.controller import SparseController


def _adam_state(ctl: "SparseController", p: torch.Tensor) -> tuple[dict, float] | None:
    """Adam state of p and its beta2, or None before the first step."""
    if ctl.optimizer is None:
        raise RuntimeError("method 'step' needs ctl.bind_optimizer(optimizer) (an Adam-type optimizer)")
    state = ctl.optimizer.state.get(p)
    if not state or "exp_avg_sq" not in state:
        return None
    for group in ctl.optimizer.param_groups:
        if any(q is p for q in group["params"]):
            if group.get("amsgrad", False):
                raise ValueError("method 'step' freezes Adam's exp_avg_sq, which amsgrad=True bypasses "
                                 "(it divides by max_exp_avg_sq); use amsgrad=False")
            return state, float(group["betas"][1])
    return None


@register_method
@dataclass
class STEP(SparseMethod):
    name = "step"
    description = "dense Adam until the second moment settles (AutoSwitch), then 2:4 with v frozen"
    reference = "Lu et al., STEP, ICML 2023 (arXiv 2302.01172)"

    min_switch_fraction: float = 0.1
    max_switch_fraction: float = 0.5
    switch_tolerance: float = 0.02
    check_interval: int = 10

    def validate(self, total_steps: int | None) -> None:
        super().validate(total_steps)
        if total_steps is None:
            raise ValueError("step: needs total_steps (the switch bounds are fractions of it)")
        if not 0.0 <= self.min_switch_fraction <= self.max_switch_fraction <= 1.0:
            raise ValueError(f"step: need 0 <= min_switch_fraction <= max_switch_fraction <= 1, got "
                             f"{self.min_switch_fraction!r}, {self.max_switch_fraction!r}")
        if not isinstance(self.check_interval, int) or self.check_interval < 1:
            raise ValueError(f"step: check_interval must be an int >= 1, got {self.check_interval!r}")

    def setup(self, ctl: "SparseController") -> None:
        self.switched_at: int | None = None
        self.last_change = float("nan")
        self._v_prev: dict[str, torch.Tensor] = {}
        self.v_frozen: dict[str, torch.Tensor] = {}
        for layer in ctl.layers.values():
            layer.mode = "dense"

    def bounds(self, ctl: "SparseController") -> tuple[int, int]:
        total = ctl.total_steps
        return int(round(self.min_switch_fraction * total)), int(round(self.max_switch_fraction * total))

    def before_step(self, ctl: "SparseController", step: int) -> None:
        if self.switched_at is None:
            return
        with torch.no_grad():
            for fqn, layer in ctl.layers.items():
                p = layer.weight
                found = _adam_state(ctl, p)
                if found is None or p.grad is None:
                    continue
                state, beta2 = found
                v = state["exp_avg_sq"]
                count = state["step"]  # a tensor (on the GPU for fused/capturable Adam): no host sync
                t = count.double() + 1 if torch.is_tensor(count) else float(count) + 1
                target = self.v_frozen[fqn] * (1 - beta2**t)  # Adam divides by (1 - beta2^t)
                c = (1 - beta2) * p.grad * p.grad  # Adam's next update: v <- beta2 v + c
                # floor: where target << c, rounding could make Adam's v slightly negative (sqrt -> NaN)
                floor = c * (16 * torch.finfo(v.dtype).eps - 1) / beta2
                v.copy_(torch.maximum((target - c) / beta2, floor))

    def after_step(self, ctl: "SparseController", step: int) -> None:
        if self.switched_at is not None:
            return
        done = step + 1
        lo, hi = self.bounds(ctl)
        if done % self.check_interval == 0 or done >= hi:
            self._measure(ctl)
        if done >= hi or (done >= lo and self.last_change < self.switch_tolerance):
            self._switch(ctl, step)

    def _measure(self, ctl: "SparseController") -> None:
        change = total = 0.0
        for fqn, layer in ctl.layers.items():
            found = _adam_state(ctl, layer.weight)
            if found is None:
                return
            v = found[0]["exp_avg_sq"].detach().float()
            if fqn in self._v_prev:
                change += float((v - self._v_prev[fqn]).abs().sum())
                total += float(self._v_prev[fqn].abs().sum())
            self._v_prev[fqn] = v.clone()
        if total > 0:
            self.last_change = change / total

    def _switch(self, ctl: "SparseController", step: int) -> None:
        for fqn, layer in ctl.layers.items():
            found = _adam_state(ctl, layer.weight)
            if found is None:
                raise RuntimeError("step: the switch needs Adam state; was the optimizer stepped?")
            state, beta2 = found
            self.v_frozen[fqn] = (state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).detach().clone()
            layer.mode = "sparse"
            layer.refresh_mask()
        self.switched_at = step + 1
        self._v_prev = {}

    def metrics(self, ctl: "SparseController") -> dict[str, float]:
        return {"step_switched": float(self.switched_at is not None), "step_v_change": self.last_change}

    def state_dict(self) -> dict[str, Any]:
        return {"switched_at": self.switched_at, "last_change": self.last_change,
                "v_prev": dict(self._v_prev), "v_frozen": dict(self.v_frozen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switched_at = state["switched_at"]
        self.last_change = float(state["last_change"])
        self._v_prev = dict(state["v_prev"])
        self.v_frozen = dict(state["v_frozen"])

    def restored(self, ctl: "SparseController") -> None:
        """Layer modes that match the loaded phase; saved v tensors moved to their layer's device."""
        for fqn, layer in ctl.layers.items():
            layer.mode = "sparse" if self.switched_at is not None else "dense"
            for saved in (self._v_prev, self.v_frozen):
                if fqn in saved:
                    saved[fqn] = saved[fqn].to(layer.weight.device)
