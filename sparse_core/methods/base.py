"""A sparse-training method = its options (a dataclass with per-method defaults) + optional hooks.

The controller runs the shared dynamics (masked decay, mask refresh, flip rate, warm-up lambda rule,
dense fine-tuning); a method sets their defaults and adds its own steps (STEP's switch, Bi-Mask's
backward mask, S-STE's soft threshold) through the hooks below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sparse_core.backends import BACKENDS
from sparse_core.linear import MASK_KINDS

if TYPE_CHECKING:
    from sparse_core.controller import SparseController

DECAY_FORMS = ("gradient", "weight", "none")


@dataclass
class SparseMethod:
    """Options shared by every method; subclasses change defaults and add fields."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    swaps_layers: ClassVar[bool] = True  # False for dense/half: nothing becomes a SparseLinear

    mask_kind: str = "magnitude"  # 'magnitude' (2:4 along in-features) or 'transposable'
    mvue: bool = False  # dW from an unbiased 2:4 sparsification of dY^T
    mask_refresh_interval: int = 1  # optimizer steps between mask recomputations
    decay: str = "none"  # masked decay: 'gradient' (g += lam (1-M) W), 'weight' (W -= lr lam (1-M) W), 'none'
    lambda_w: Any = 0.0  # masked-decay factor, or 'auto' (chosen in warm-up from the flip rate)
    dense_ft_fraction: Any = None  # switch every layer to dense at this fraction of total_steps (None: never)
    warmup_steps: Any = None  # steps in which 'auto' chooses lambda_w (default: 10% of total_steps)
    lambda_init: float = 6e-6  # first lambda tried by 'auto': the smallest value Hu et al. used (BERT)
    lambda_growth: float = 2.0  # geometric factor of the 'auto' rule
    flip_low: float = 1e-3  # target band of the flip rate per refresh for 'auto'
    flip_high: float = 1e-2
    backend: str = "auto"  # SparseLinear backend: 'auto', 'reference', or a fast GPU backend

    def validate(self, total_steps: int | None) -> None:
        """Refuse impossible option values and combinations before training starts."""
        self._check_types()
        if self.mask_kind not in MASK_KINDS:
            raise ValueError(f"{self.name}: mask_kind must be one of {MASK_KINDS}, got {self.mask_kind!r}")
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"{self.name}: unknown backend {self.backend!r}; known: {sorted(BACKENDS)} or 'auto'")
        if self.decay not in DECAY_FORMS:
            raise ValueError(f"{self.name}: decay must be one of {DECAY_FORMS}, got {self.decay!r}")
        interval = self.mask_refresh_interval
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f"{self.name}: mask_refresh_interval must be an int >= 1, got {interval!r}")
        if self.lambda_w != "auto":
            if (isinstance(self.lambda_w, bool) or not isinstance(self.lambda_w, (int, float))
                    or not math.isfinite(self.lambda_w) or self.lambda_w < 0):
                raise ValueError(f"{self.name}: lambda_w must be a float >= 0 or 'auto', got {self.lambda_w!r}")
        frac = self.dense_ft_fraction
        if frac is not None:
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
                raise ValueError(f"{self.name}: dense_ft_fraction must be in [0, 1] or None, got {frac!r}")
            if total_steps is None:
                raise ValueError(f"{self.name}: dense_ft_fraction={frac} needs total_steps")
        if self.lambda_w == "auto":
            if self.warmup_steps is None and total_steps is None:
                raise ValueError(f"{self.name}: lambda_w='auto' needs warmup_steps or total_steps")
            if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 1):
                raise ValueError(f"{self.name}: warmup_steps must be an int >= 1, got {self.warmup_steps!r}")
            if not self.lambda_init > 0 or not self.lambda_growth > 1:
                raise ValueError(f"{self.name}: need lambda_init > 0 and lambda_growth > 1, "
                                 f"got {self.lambda_init!r}, {self.lambda_growth!r}")
            if not 0 <= self.flip_low <= self.flip_high <= 1:
                raise ValueError(f"{self.name}: need 0 <= flip_low <= flip_high <= 1, "
                                 f"got {self.flip_low!r}, {self.flip_high!r}")
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")

    def _check_types(self) -> None:
        """Each field must hold the type its default has (numbers: int or float; None where allowed)."""
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if default is dataclasses.MISSING or default is None or f.name in ("lambda_w", "dense_ft_fraction"):
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, (int, float)):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise TypeError(f"{self.name}: option {f.name} must be {type(default).__name__}, got {value!r}")

    def layer_options(self) -> dict[str, Any]:
        """Keyword options for every SparseLinear this method creates."""
        return {"mask_kind": self.mask_kind, "mvue": self.mvue,
                "mask_refresh_interval": self.mask_refresh_interval, "backend": self.backend}

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- hooks (no-ops by default) -------------------------------------------------------------
    def setup(self, ctl: "SparseController") -> None:
        """Called once after the layers are swapped in."""

    def before_step(self, ctl: "SparseController", step: int) -> None:
        """Called after unscale, clip and the shared masked decay, right before optimizer.step()."""

    def after_step(self, ctl: "SparseController", step: int) -> None:
        """Called after the optimizer step, before the shared mask refresh."""

    def after_refresh(self, ctl: "SparseController", step: int) -> None:
        """Called after masks were refreshed (e.g. to rebuild Bi-Mask's backward masks)."""

    def restored(self, ctl: "SparseController") -> None:
        """Called after the controller state was loaded (re-apply modes or masks it implies)."""

    def metrics(self, ctl: "SparseController") -> dict[str, float]:
        """Method-specific scalars for loggers (prefixed 'sparse/' by the controller)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name}: unexpected method state keys {sorted(state)}")


METHOD_CLASSES: dict[str, type[SparseMethod]] = {}


def register_method(cls: type[SparseMethod]) -> type[SparseMethod]:
    """Class decorator recording a method under its `name` (a duplicate name is an error)."""
    if not cls.name or cls.name in METHOD_CLASSES:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    METHOD_CLASSES[cls.name] = cls
    return cls


def build_method(name: str, **options: Any) -> SparseMethod:
    """Instantiate method `name` with `options`; unknown names or options are clear errors."""
    if name not in METHOD_CLASSES:
        raise ValueError(f"unknown sparse method {name!r}; known: {sorted(METHOD_CLASSES)}")
    cls = METHOD_CLASSES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {name!r}; valid: {sorted(fields)}")
    return cls(**options)
