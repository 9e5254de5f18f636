"""SparseController: the one object a training loop calls around each optimizer step.

    ctl = sparse_core.sparsify(model, method="2by4", total_steps=N)
    ctl.bind_optimizer(optimizer)
    ... backward, unscale, clip ...
    ctl.before_optimizer_step(step)   # masked decay (gradient or weight form), then method hooks
    optimizer.step()
    ctl.after_optimizer_step(step)    # mask refresh + flip rate, warm-up lambda rule, dense switch

`step` counts optimizer steps completed before this one (0-based).

Warm-up lambda rule (lambda_w='auto'), after Hu et al. 2024 Sec. 5: the flip rate r (share of mask
entries changed since the previous refresh) is a health signal; too large a flip rate means the masks
oscillate. During the first `warmup_steps` steps, at every mask refresh: if r > flip_high, lambda is
raised (from lambda_init, then times lambda_growth); if r < flip_low, lambda is lowered once by
lambda_growth and frozen; if r is inside [flip_low, flip_high], lambda is frozen. At the end of
warm-up lambda is frozen wherever it is. The chosen value is logged and saved in the state.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sparse_core.linear import SparseLinear
from sparse_core.methods.base import SparseMethod

__all__ = ["SparseController", "decay_gradient_", "next_lambda"]


def next_lambda(lam: float, flip_rate: float, *, low: float, high: float, growth: float) -> tuple[float, bool]:
    """One step of the warm-up rule: (new lambda, settled). Raise while the flip rate is above the
    band; lower once and settle below it; settle inside it."""
    if flip_rate > high:
        return lam * growth, False
    if flip_rate < low:
        return lam / growth, True
    return lam, True


def decay_gradient_(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, lam: float) -> None:
    """grad += lam (1 - mask) weight: one fused pass on CUDA (sparse_core.kernels.masked_decay_), torch elsewhere."""
    if grad.is_cuda and grad.is_contiguous() and weight.is_contiguous():
        from sparse_core.kernels import has_triton, masked_decay_  # lazy: imports triton when present

        if has_triton():
            masked_decay_(grad, weight, mask, lam)
            return
    grad.add_(weight * ~mask, alpha=lam)


class SparseController:
    """Runs a method's dynamics on the SparseLinear layers of one model."""

    def __init__(self, layers: dict[str, SparseLinear], method: SparseMethod, total_steps: int | None) -> None:
        method.validate(total_steps)
        self.layers = layers
        self.method = method
        self.total_steps = total_steps
        self.optimizer: torch.optim.Optimizer | None = None
        self.lambda_w = method.lambda_init if method.lambda_w == "auto" else float(method.lambda_w)
        self.lambda_settled = method.lambda_w != "auto"
        self.dense = False
        self._flip_rates: dict[str, float] = {}
        self._flip_rate = 0.0
        self._pending: tuple[list[tuple[str, int]], torch.Tensor] | None = None  # refreshed, not read back yet
        method.setup(self)
        if self.dense_start == 0:
            self._switch_to_dense()

    # ---- derived schedule ----------------------------------------------------------------------
    @property
    def dense_start(self) -> int | None:
        """First optimizer step whose forward runs dense (None: never)."""
        frac = self.method.dense_ft_fraction
        if frac is None or not self.layers:
            return None
        return int(round(frac * self.total_steps))

    @property
    def warmup_steps(self) -> int:
        if self.method.warmup_steps is not None:
            return self.method.warmup_steps
        return max(1, (self.total_steps or 0) // 10)

    # ---- loop hooks ----------------------------------------------------------------------------
    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Give the controller the optimizer (learning rate for weight decay, Adam state for STEP)."""
        self.optimizer = optimizer

    def before_optimizer_step(self, step: int) -> None:
        """Masked decay before the update: after unscale and clipping, so it is not clipped away."""
        if not self.layers or self.dense:
            return
        if self.method.decay != "none" and self.lambda_w != 0.0:
            with torch.no_grad():
                for layer in self.sparse_layers():
                    if self.method.decay == "gradient":
                        if layer.weight.grad is not None:  # g <- g + lambda (1 - M) W
                            decay_gradient_(layer.weight.grad, layer.weight, layer.mask, self.lambda_w)
                    else:  # W <- W - lr lambda (1 - M) W
                        layer.weight.sub_(layer.weight * ~layer.mask, alpha=self.lr_of(layer.weight) * self.lambda_w)
        self.method.before_step(self, step)  # last: it may need the final gradient (STEP's frozen v)

    def after_optimizer_step(self, step: int) -> None:
        """Mask refresh and flip rate, warm-up lambda rule, and the dense switch."""
        if not self.layers or self.dense:
            return
        self.method.after_step(self, step)
        due = [(fqn, layer) for fqn, layer in self.layers.items()
               if layer.mode == "sparse" and (step + 1) % layer.mask_refresh_interval == 0]
        if due:
            self._refresh(due)
            self.method.after_refresh(self, step)
            if not self.lambda_settled:
                self._lambda_rule()
        if not self.lambda_settled and step + 1 >= self.warmup_steps:
            self.lambda_settled = True
        if self.dense_start is not None and step + 1 >= self.dense_start:
            self._switch_to_dense()

    # ---- pieces --------------------------------------------------------------------------------
    def sparse_layers(self) -> list[SparseLinear]:
        return [layer for layer in self.layers.values() if layer.mode == "sparse"]

    def lr_of(self, param: torch.Tensor) -> float:
        """Learning rate of the optimizer group holding `param`."""
        if self.optimizer is None:
            raise RuntimeError(f"method {self.method.name!r} needs ctl.bind_optimizer(optimizer) first")
        for group in self.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return float(group["lr"])
        raise RuntimeError("a sparse weight is not in the bound optimizer's parameter groups")

    @property
    def flip_rate(self) -> float:
        """Share of the refreshed layers' mask entries that changed at the last refresh."""
        self._read_flips()
        return self._flip_rate

    @property
    def flip_rates(self) -> dict[str, float]:
        """The same per layer (each layer's last refresh)."""
        self._read_flips()
        return self._flip_rates

    def _refresh(self, due: list[tuple[str, SparseLinear]]) -> None:
        sizes = [(fqn, layer.mask.numel()) for fqn, layer in due]
        if self._pending is not None and [f for f, _ in self._pending[0]] != [f for f, _ in sizes]:
            self._read_flips()  # layers on other intervals: keep their last counts
        counts = [layer.refresh_mask_async() for _, layer in due]
        # flip counts stay on the device until read (logging, checkpoint, the warm-up lambda rule): no host
        # sync in a step that only refreshes masks
        self._pending = (sizes, torch.stack([c.to(counts[0].device) for c in counts]))

    def _read_flips(self) -> None:
        if self._pending is None:
            return
        sizes, counts = self._pending
        self._pending = None
        flips = counts.tolist()  # the one host sync
        for (fqn, numel), n in zip(sizes, flips):
            self._flip_rates[fqn] = n / numel
        self._flip_rate = sum(flips) / sum(numel for _, numel in sizes)

    def _lambda_rule(self) -> None:
        m = self.method
        self.lambda_w, self.lambda_settled = next_lambda(
            self.lambda_w, self.flip_rate, low=m.flip_low, high=m.flip_high, growth=m.lambda_growth)

    def _switch_to_dense(self) -> None:
        for layer in self.layers.values():
            layer.mode = "dense"
        self.dense = True

    # ---- logging and state ---------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Scalars for loggers: overall and per-layer flip rate, lambda, dense flag."""
        if not self.layers:
            return {}
        out = {"sparse/flip_rate": self.flip_rate, "sparse/lambda_w": self.lambda_w,
               "sparse/lambda_settled": float(self.lambda_settled), "sparse/dense": float(self.dense)}
        out.update({f"sparse/flip_rate/{fqn}": r for fqn, r in self.flip_rates.items()})
        out.update({f"sparse/{k}": float(v) for k, v in self.method.metrics(self).items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.name, "lambda_w": self.lambda_w, "lambda_settled": self.lambda_settled,
                "dense": self.dense, "flip_rate": self.flip_rate, "flip_rates": dict(self.flip_rates),
                "method_state": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.method.name:
            raise ValueError(f"controller state is for method {state.get('method')!r}, not {self.method.name!r}")
        keys = ("lambda_w", "lambda_settled", "dense", "flip_rate", "flip_rates", "method_state")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"controller state lacks keys {missing}")
        self.lambda_w = float(state["lambda_w"])
        if not math.isfinite(self.lambda_w):
            raise ValueError(f"controller state has a non-finite lambda_w {self.lambda_w}")
        self.lambda_settled = bool(state["lambda_settled"])
        self._pending = None
        self._flip_rate = float(state["flip_rate"])
        self._flip_rates = {k: float(v) for k, v in state["flip_rates"].items()}
        self.method.load_state_dict(state["method_state"])
        if self.dense and not state["dense"]:  # this controller already switched; the state has not
            self.dense = False
            for layer in self.layers.values():
                layer.mode = "sparse"
        self.method.restored(self)
        if state["dense"]:
            self._switch_to_dense()

    def __repr__(self) -> str:
        backends = sorted({layer.backend.name for layer in self.layers.values()})
        return (f"SparseController(method={self.method.name!r}, layers={len(self.layers)}, "
                f"backends={backends}, lambda_w={self.lambda_w:g}, dense={self.dense})")
