"""SparseLinear: an nn.Linear trained with a 2:4 sparse weight through a custom autograd function.

The three GEMMs of one layer (X: tokens x in, W: out x in, M: the 2:4 mask):
    Y  = X (M*W)^T               forward, M 2:4 along `in`
    dX = dY (M_b*W)              M_b = M, or the layer's `backward_mask` when a method sets one (Bi-Mask);
                                 a transposable M makes (M*W)^T 2:4 too, for sparse cores
    dW = MVUE(dY^T)^T X          or dY^T X with MVUE off; lands on the dense W (straight-through)
The backend (reference torch, or a fast GPU one) computes them; operands are rebuilt only when the
weight or mask changes, i.e. once per optimizer step, however many micro-batches run; a backend with a
fused pass (`Backend.refresh_and_prepare`) builds them together with the mask on a refresh.

Transposable masks of CUDA weights (float32/bfloat16/float16, both dims multiples of 64) are computed by
the Triton kernel `sparse_core.kernels.transposable_mask` (same rule as masks.transposable_mask_24), other
weights by that torch rule; set SPARSE_CORE_MASK_KERNEL=0 to force the torch rule everywhere (debugging).
The kernel path does not stop for NaN weights (they count as 0, so the mask stays valid): a NaN weight
comes from a NaN step, which the training guard (sparse_core.train.NonFiniteGuard) refuses first.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparse_core.backends import Backend, SparseOperands, resolve_backend
from sparse_core.masks import mask_24, replace_mask, transposable_mask_24

__all__ = ["SparseLinear", "sparse_linear", "MASK_KINDS", "MODES"]

MASK_KINDS = ("magnitude", "transposable")
MODES = ("sparse", "dense")

WeightTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (weight, mask) -> w_fwd


def _mask_kernels_allowed() -> bool:
    """False when SPARSE_CORE_MASK_KERNEL=0 forces the torch mask rule (and no fused refresh) everywhere."""
    return os.environ.get("SPARSE_CORE_MASK_KERNEL", "1") != "0"


def _use_mask_kernel(weight: torch.Tensor) -> bool:
    """Whether the transposable mask of `weight` goes to the Triton kernel: a CUDA weight that
    sparse_core.kernels.transposable_mask accepts, triton installed, SPARSE_CORE_MASK_KERNEL not '0'."""
    if not _mask_kernels_allowed() or not weight.is_cuda:
        return False
    from sparse_core.kernels import has_triton  # lazy: the kernels package imports triton when present
    from sparse_core.kernels.transposable import accepts_mask_weight

    return has_triton() and accepts_mask_weight(weight)


def _transposable_mask(weight: torch.Tensor) -> torch.Tensor:
    """The exact transposable mask of `weight`: the Triton kernel where it applies, else the torch rule."""
    if _use_mask_kernel(weight):
        from sparse_core.kernels.transposable import transposable_mask

        return transposable_mask(weight, check_nan=False)  # no host sync; a NaN weight is the guard's to stop
    return transposable_mask_24(weight)


class _SparseLinearFunction(torch.autograd.Function):
    """Y = X W_f^T; dX = dY W_b; dW = S(dY^T) X onto the dense master weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, backend, mvue, generator):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.plan, ctx.backend, ctx.mvue, ctx.generator = plan, backend, mvue, generator
        ctx.weight_dtype = weight.dtype
        return backend.linear(x, plan, None if bias is None else bias.to(x.dtype))  # Y = X W_f^T + b

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        dy = dy.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = ctx.backend.grad_input(dy, ctx.plan)  # dX = dY W_b
        if ctx.needs_input_grad[1] and ctx.needs_input_grad[2]:  # dW = S(dY^T) X, db = sum of dY over tokens
            dw, db = ctx.backend.grad_weight_and_bias(dy, x, ctx.mvue, ctx.generator)
        elif ctx.needs_input_grad[1]:
            dw = ctx.backend.grad_weight(dy, x, ctx.mvue, ctx.generator)
        elif ctx.needs_input_grad[2]:
            db = dy.sum(0)
        if dw is not None:
            dw = dw.to(ctx.weight_dtype)
        return dx, dw, db, None, None, None, None


def sparse_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    plan: Any,
    backend: Backend,
    mvue: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Functional form on 2-D x: the products run on `plan` (from `backend.prepare`), grads on `weight`."""
    return _SparseLinearFunction.apply(x, weight, bias, plan, backend, mvue, generator)


class SparseLinear(nn.Linear):
    """Drop-in nn.Linear whose forward and backward use a 2:4 sparse weight.

    mode: 'sparse' (2:4) or 'dense' (plain linear, e.g. for dense fine-tuning).
    mask_kind: 'magnitude' (2:4 along in-features) or 'transposable' (W and W^T both 2:4).
    mvue: estimate dW from an unbiased 2:4 sparsification of dY^T along tokens.
    mask_refresh_interval: recompute the mask every this many optimizer steps (cached in between).
    backend: 'auto', 'reference' or a registered fast backend.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        mode: str = "sparse",
        mask_kind: str = "magnitude",
        mvue: bool = False,
        mask_refresh_interval: int = 1,
        backend: str = "auto",
    ) -> None:
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if size <= 0 or size % 4:
                raise ValueError(f"SparseLinear needs {name} to be a positive multiple of 4, got {size}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._configure(mode, mask_kind, mvue, mask_refresh_interval, backend)

    def _configure(self, mode: str, mask_kind: str, mvue: bool, mask_refresh_interval: int, backend: str) -> None:
        self.mode = mode
        self.mask_kind = mask_kind
        if not isinstance(mvue, bool):
            raise TypeError(f"mvue must be a bool, got {mvue!r}")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a str, got {backend!r}")
        self.mvue = mvue
        self.mask_refresh_interval = mask_refresh_interval
        self.backend_name = backend
        self.generator: torch.Generator | None = None
        self.weight_transform: WeightTransform | None = None  # e.g. S-STE's soft threshold
        self.register_buffer("mask", self.compute_mask(), persistent=True)
        self.register_buffer("backward_mask", None)
        self._plan_key: tuple | None = None
        self._plan: Any = None

    # ---- configuration -------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value

    @property
    def mask_kind(self) -> str:
        return self._mask_kind

    @mask_kind.setter
    def mask_kind(self, value: str) -> None:
        if value not in MASK_KINDS:
            raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {value!r}")
        self._mask_kind = value

    @property
    def mask_refresh_interval(self) -> int:
        return self._refresh

    @mask_refresh_interval.setter
    def mask_refresh_interval(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"mask_refresh_interval must be an int >= 1, got {value!r}")
        self._refresh = value

    @classmethod
    def from_dense(cls, linear: nn.Linear, **options: Any) -> "SparseLinear":
        """A SparseLinear sharing `linear`'s parameters (same tensors, so optimizers stay valid)."""
        out_features, in_features = linear.weight.shape
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if size % 4:
                raise ValueError(f"cannot make a 2:4 layer: {name} = {size} is not a multiple of 4")
        unknown = set(options) - {"mode", "mask_kind", "mvue", "mask_refresh_interval", "backend"}
        if unknown:
            raise TypeError(f"unknown SparseLinear options: {sorted(unknown)}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = in_features, out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.train(linear.training)
        layer._configure(options.get("mode", "sparse"), options.get("mask_kind", "magnitude"),
                         options.get("mvue", False), options.get("mask_refresh_interval", 1),
                         options.get("backend", "auto"))
        return layer

    def to_dense(self) -> nn.Linear:
        """A plain nn.Linear holding the effective (masked, transformed) weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.effective_weight() if self.mode == "sparse" else self.weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    # ---- masks ---------------------------------------------------------------------------------
    def compute_mask(self) -> torch.Tensor:
        """The mask rule of this layer applied to the current weight."""
        with torch.no_grad():
            if self.mask_kind == "transposable":
                return _transposable_mask(self.weight.detach())
            return mask_24(self.weight, dim=1)

    def refresh_mask(self) -> int:
        """Recompute the mask from the weight; returns how many entries flipped."""
        return int(self.refresh_mask_async())

    def refresh_mask_async(self) -> torch.Tensor:
        """`refresh_mask` without a host sync: the flip count stays a 0-d tensor on the mask's device.
        Where the backend can (cusparselt, transposable mask, Y and dX sparse), the mask is rewritten in place,
        its flips counted and the next forward's compressed W and W^T built in one fused pass, instead of the
        mask rule, a comparison and `prepare`."""
        flips = self._fused_refresh()
        return replace_mask(self.mask, self.compute_mask()) if flips is None else flips

    def _fused_refresh(self) -> torch.Tensor | None:
        """The flip count of the backend's one-pass refresh for the compute dtype of the last forward (mask and
        operands updated); None when no forward has run yet or the layer's rule is not the plain transposable one."""
        if (self.mode != "sparse" or self.mask_kind != "transposable" or self.weight_transform is not None
                or self.backward_mask is not None or self._plan_key is None or not _mask_kernels_allowed()):
            return None
        backend, dtype = self.backend, self._plan_key[1]
        got = backend.refresh_and_prepare(self.weight.detach(), dtype, self.mask)
        if got is None:
            return None
        flips, self._plan = got
        self._plan_key = self._plan_key_for(backend, dtype)
        return flips

    def effective_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The sparse weight the forward product uses: M*W, or the method's transform of W."""
        w = self.weight.detach()
        w = self.weight_transform(w, self.mask) if self.weight_transform is not None else w * self.mask
        return w if dtype is None else w.to(dtype)

    # ---- forward -------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return resolve_backend(self.backend_name, self.weight.device)

    def _operands(self, dtype: torch.dtype) -> SparseOperands:
        w_fwd = self.effective_weight(dtype)
        if self.backward_mask is None:
            return SparseOperands(w_fwd, self.mask, w_fwd, self.mask, self.mask_kind == "transposable")
        w_bwd = (self.weight.detach() * self.backward_mask).to(dtype)
        return SparseOperands(w_fwd, self.mask, w_bwd, self.backward_mask, False)

    def plan(self, dtype: torch.dtype, backend: Backend | None = None) -> Any:
        """Backend operands for `dtype`, rebuilt only when the weight or a mask has changed."""
        backend = self.backend if backend is None else backend
        key = self._plan_key_for(backend, dtype)
        if key != self._plan_key:
            self._plan = backend.prepare(self._operands(dtype))
            self._plan_key = key
        return self._plan

    def _plan_key_for(self, backend: Backend, dtype: torch.dtype) -> tuple:
        """What the operands depend on: backend, dtype, device, and the weight's and masks' storage and versions
        (`param.data = t` changes the storage; in-place ops bump the version, except writes through `.data`)."""
        bmask = self.backward_mask
        return (backend.name, dtype, self.weight.device, self.weight.data_ptr(), self.weight._version,
                self.mask.data_ptr(), self.mask._version, id(self.mask),
                None if bmask is None else (id(bmask), bmask.data_ptr(), bmask._version), self.weight.dtype)

    def invalidate(self) -> None:
        """Drop cached operands. They are dropped automatically when the weight or a mask changes in place
        (optimizer steps, `with torch.no_grad(): w.mul_(...)`) or moves to new storage (`param.data = t`, seen by its
        address). Call this after a write through `w.data` (it bypasses the version counter), and after replacing
        `.data` more than once between forwards (a later replacement may land at the first one's freed address)."""
        self._plan_key, self._plan = None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return F.linear(x, self.weight, self.bias)
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        if dtype != self.weight.dtype and not torch.is_autocast_enabled(device_type):
            raise TypeError(f"input dtype {x.dtype} does not match weight dtype {self.weight.dtype}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        backend = self.backend
        plan = self.plan(dtype, backend)
        x2d = x.reshape(-1, self.in_features).to(dtype).contiguous()  # GEMM backends want row-major X
        with torch.autocast(device_type, enabled=False):
            y = _SparseLinearFunction.apply(x2d, self.weight, self.bias, plan, backend, self.mvue, self.generator)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, mode={self.mode}, mask_kind={self.mask_kind}, mvue={self.mvue}, "
                f"refresh={self.mask_refresh_interval}, backend={self.backend_name}")
