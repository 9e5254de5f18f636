"""cuSPARSELt backend: SparseLinear's three products on 2:4 sparse tensor cores (sm_80 / sm_90).

Each product runs as A @ B with the 2:4 operand A compressed into cuSPARSELt's layout:
    Y^T  = W_f   (out, in) @ X^T  (in, T)    A = W_f,      compressed once per optimizer step
    dX^T = W_b^T (in, out) @ dY^T (out, T)   A = W_b^T,    2:4 along `out` only under a transposable mask
    dW   = S(dY^T) (out, T) @ X   (T, in)    A = MVUE(dY^T) along tokens, compressed every micro-batch
Which products run sparse is an option ('fwd', 'dx', 'dw'); the others run as dense GEMMs on the
same (masked) operands, so the math never changes, only the speed. The layer's bias is added in the
forward GEMM's epilogue (cuSPARSELt's bias pointer; F.linear's on the dense path). On a mask refresh
`refresh_and_prepare` builds the mask and both compressed operands in one fused pass. With dW sparse, the fused
MVUE pass over dY also yields the bias gradient (`grad_weight_and_bias`). Rules, all documented here:
- compute dtype must be bf16 or fp16 and in/out features multiples of 64 (the layout our kernels write);
  otherwise the layer silently-but-warned runs every product dense.
- a token count that is not a multiple of 64 is zero-padded to one (exact: zero rows add nothing).
- 'dx' needs a transposable mask (SparseOperands.transposable); 'dw' needs the layer's `mvue`.
- the best cuSPARSELt algorithm is searched once per (shape, layout) and cached (option `search`).
- host cost: each eager `_cslt_sparse_mm` spends 0.4-0.7 ms planning on the CPU. Option mm (env
  SPARSE_CORE_CUSPARSELT_MM) = 'auto' (default) | 'plans' | 'torch': 'plans' runs the GEMMs through
  `cslt_ext.sparse_mm`, a small C++ extension caching cuSPARSELt plans (15-45 us of host time per call on
  the H200, bit-identical results; compiled once per machine on first use; an explicit 'plans' that cannot
  build is an error); 'auto' = 'plans' when it builds, else torch's op with a warning. Capturing the step in a CUDA graph (`sparse_core.graphs`)
  removes the host cost too, and combines with either.
- `torch.compile` does not trace into these products: they are excluded with
  `torch.compiler.disable`, so a compiled model graph-breaks around each sparse layer and still works.

Names registered: 'cusparselt' (products from SPARSE_CORE_CUSPARSELT_PRODUCTS, default 'fwd,dx,dw' with
the fused kernels: for a layer with MVUE the sparse dW is then the fastest path; 'fwd,dx' with torch's
compressor, whose compression of dY^T costs about what a sparse dW saves), 'cusparselt-fwd', 'cusparselt-fwd-dx',
'cusparselt-all'. SPARSE_CORE_CUSPARSELT_COMPRESS = auto|torch|triton (auto: sparse_core.kernels when
triton imports and its output is byte-identical to torch._cslt_compress, checked once per dtype) and
SPARSE_CORE_CUSPARSELT_SEARCH = 1|0 apply to every name. The fused MVUE kernel reads its seed from a
device tensor drawn from torch's CUDA generator, so it runs inside CUDA graphs (a new seed every replay)
and a checkpoint of torch's RNG state reproduces its draws.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sparse_core.backends.base import Backend, SparseOperands
from sparse_core.backends._cslt_kernels import KernelSet, kernel_set
from sparse_core.backends.reference import mvue_tokens

__all__ = ["CusparseltBackend", "CusparseltPlan", "PRODUCTS", "COMPRESSORS", "MATMULS", "FEATURE_MULTIPLE", "TOKEN_MULTIPLE"]

PRODUCTS = ("fwd", "dx", "dw")
COMPRESSORS = ("auto", "torch", "triton")
MATMULS = ("auto", "plans", "torch")  # cslt_ext.sparse_mm (cached plans) when it builds, or torch._cslt_sparse_mm
FEATURE_MULTIPLE = 64  # the compressed layout is known for dims that are multiples of 64 (sparse_core.kernels.cslt_layout)
TOKEN_MULTIPLE = 64  # tokens are zero-padded up to this (the 2:4 dim of S(dY^T))
SPARSE_DTYPES = (torch.bfloat16, torch.float16)

_ENV_PRODUCTS = "SPARSE_CORE_CUSPARSELT_PRODUCTS"
_ENV_COMPRESS = "SPARSE_CORE_CUSPARSELT_COMPRESS"
_ENV_SEARCH = "SPARSE_CORE_CUSPARSELT_SEARCH"
_ENV_MM = "SPARSE_CORE_CUSPARSELT_MM"


@dataclass(frozen=True)
class CusparseltPlan:
    """One optimizer step's operands: compressed (sparse) or dense, for the forward and dX products."""

    fwd: torch.Tensor  # compressed W_f if fwd_sparse else dense W_f (out, in)
    bwd: torch.Tensor  # compressed W_b^T if bwd_sparse else dense W_b (out, in)
    fwd_sparse: bool
    bwd_sparse: bool


def parse_products(value: str | tuple[str, ...] | frozenset[str] | None) -> frozenset[str] | None:
    """'fwd,dx' or an iterable of product names -> frozenset; None stays None (= default)."""
    if value is None:
        return None
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    items = [p for p in items if p]
    bad = [p for p in items if p not in PRODUCTS]
    if bad:
        raise ValueError(f"unknown cuSPARSELt product(s) {bad}; choose from {PRODUCTS}, e.g. 'fwd,dx'")
    return frozenset(items)


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _pad_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    pad = (-t.shape[0]) % multiple
    return F.pad(t, (0, 0, 0, pad)) if pad else t


def _torch_compress(a: torch.Tensor) -> torch.Tensor:
    return torch._cslt_compress(a.contiguous())


class CusparseltBackend(Backend):
    """SparseLinear products through torch's cuSPARSELt ops; options choose what runs sparse."""

    name = "cusparselt"
    default_products: frozenset[str] | None = None  # None: env var, else fwd+dx (+dw with the fused kernels)

    def __init__(self, products=None, compress: str | None = None, search: bool | None = None,
                 mm: str | None = None) -> None:
        products = parse_products(products)
        if products is None:
            products = self.default_products or parse_products(os.environ.get(_ENV_PRODUCTS) or None)
        compress = compress if compress is not None else os.environ.get(_ENV_COMPRESS, "auto") or "auto"
        if compress not in COMPRESSORS:
            raise ValueError(f"compress must be one of {COMPRESSORS}, got {compress!r}")
        self.compress = compress
        mm = mm if mm is not None else os.environ.get(_ENV_MM, "auto") or "auto"
        if mm not in MATMULS:
            raise ValueError(f"mm must be one of {MATMULS}, got {mm!r} (env {_ENV_MM})")
        self.mm = mm
        self._sparse_mm = torch._cslt_sparse_mm if mm == "torch" else None  # resolved on first use
        self.search = _env_flag(_ENV_SEARCH, True) if search is None else bool(search)
        self._kernels: KernelSet | None | bool = False  # False = not looked up yet
        self._products = products
        self._algs: dict[tuple, int] = {}
        self._checked: set[tuple] = set()  # operand layouts cslt_ext.sparse_mm has validated

    # ---- options ----------------------------------------------------------------------------
    def kernels(self) -> KernelSet | None:
        """Fused compress kernels in use (None: torch._cslt_compress is the compressor)."""
        if self._kernels is False:
            self._kernels = None if self.compress == "torch" else kernel_set()
            if self._kernels is None and self.compress == "triton":
                raise RuntimeError("compress='triton' was asked for but sparse_core.kernels (with triton) is not "
                                   "importable; use compress='torch' or 'auto'")
        return self._kernels

    def _kernels_for(self, t: torch.Tensor) -> KernelSet | None:
        return self._kernels_for_dtype(t.dtype, t.device)

    def _kernels_for_dtype(self, dtype: torch.dtype, device: torch.device) -> KernelSet | None:
        """The fused kernels when they can pack `dtype` operands on `device` (verified once per dtype)."""
        k = self.kernels()
        return k if k is not None and device.type == "cuda" and dtype in SPARSE_DTYPES and k.check(dtype, device) else None

    @property
    def products(self) -> frozenset[str]:
        """Products asked to run sparse (each still subject to the shape/dtype/mask rules)."""
        if self._products is not None:
            return self._products
        # dW sparse (for layers with MVUE) pays only with the fused MVUE + compress kernel: then it is the fastest
        # path at every measured d (results/accelerate v4: 1.06-1.48x vs 0.90-1.23x with a dense dW GEMM on the
        # MVUE estimate); with torch's compressor the compression of dY^T costs about what it saves
        return frozenset({"fwd", "dx", "dw"}) if self.kernels() is not None else frozenset({"fwd", "dx"})

    def describe(self) -> str:
        """One line naming the options in effect."""
        comp = "sparse_core.kernels" if self.kernels() is not None else "torch._cslt_compress"
        return (f"{self.name}: sparse={','.join(p for p in PRODUCTS if p in self.products)} compress={comp} "
                f"search={self.search} mm={self.mm}")

    @classmethod
    def unavailable_reason(cls, device: torch.device) -> str | None:
        device = torch.device(device)
        if device.type != "cuda":
            return f"cuSPARSELt needs a CUDA device, got {device.type!r}"
        if not torch.cuda.is_available():
            return "CUDA is not available in this torch build or machine"
        major, minor = torch.cuda.get_device_capability(device)
        if major not in (8, 9):
            return f"2:4 sparse tensor cores through cuSPARSELt are used on sm_80/sm_90 only, this GPU is sm_{major}{minor}"
        if not torch.backends.cusparselt.is_available():
            return "torch was built without cuSPARSELt (torch.backends.cusparselt.is_available() is False)"
        return None

    # ---- compression --------------------------------------------------------------------------
    def _compress_w(self, w: torch.Tensor, mask: torch.Tensor, transpose: bool) -> torch.Tensor:
        """Compressed operand of W (or W^T): fused kernel under the given mask, else _cslt_compress."""
        k = self._kernels_for(w)
        if k is not None:
            return k.compress(w, mask, transpose=transpose)
        return _torch_compress(w.t() if transpose else w)

    def _compress_s(self, s: torch.Tensor) -> torch.Tensor:
        """Compressed operand of an already-2:4 S(dY^T) (out, tokens)."""
        k = self._kernels_for(s)
        return k.compress(s, None) if k is not None else _torch_compress(s)

    def _sparse_ok(self, ops_dtype: torch.dtype, out_features: int, in_features: int) -> bool:
        ok = ops_dtype in SPARSE_DTYPES and out_features % FEATURE_MULTIPLE == 0 and in_features % FEATURE_MULTIPLE == 0
        if not ok:
            warnings.warn(f"cusparselt backend: layer {out_features}x{in_features} in {ops_dtype} runs dense "
                          f"(sparse needs bf16/fp16 and features multiple of {FEATURE_MULTIPLE})", stacklevel=3)
        return ok

    def _one_pass(self, ops: SparseOperands) -> bool:
        """Whether W and W^T (one weight, one transposable mask) can be packed by one fused-kernel launch."""
        w, m = ops.w_fwd, ops.mask_fwd
        return (ops.w_bwd is w and ops.mask_bwd is m and self._kernels_for(w) is not None and w.is_contiguous()
                and m.is_contiguous() and m.dtype == torch.bool)

    def prepare(self, ops: SparseOperands) -> CusparseltPlan:
        out_f, in_f = ops.w_fwd.shape
        ok = self._sparse_ok(ops.w_fwd.dtype, out_f, in_f)
        products = self.products
        fwd_sparse = ok and "fwd" in products
        bwd_sparse = ok and "dx" in products and ops.transposable
        with torch.no_grad():
            if fwd_sparse and bwd_sparse and self._one_pass(ops):
                from sparse_core.kernels import transposable_compress

                fwd, bwd, _ = transposable_compress(ops.w_fwd, ops.mask_fwd)  # W and W^T packed in one launch
                return CusparseltPlan(fwd, bwd, True, True)
            fwd = self._compress_w(ops.w_fwd, ops.mask_fwd, False) if fwd_sparse else ops.w_fwd.contiguous()
            if bwd_sparse:
                bwd = self._compress_w(ops.w_bwd, ops.mask_bwd, True)  # W_b^T, read through the transpose
            else:
                bwd = fwd if (ops.w_bwd is ops.w_fwd and not fwd_sparse) else ops.w_bwd.contiguous()
        return CusparseltPlan(fwd, bwd, fwd_sparse, bwd_sparse)

    def refresh_and_prepare(self, weight: torch.Tensor, dtype: torch.dtype,
                            mask: torch.Tensor) -> tuple[torch.Tensor, CusparseltPlan] | None:
        """One launch for a 16-bit weight (kernels.refresh_transposable_compress scores, rewrites `mask`, counts
        the flips and packs W and W^T); for an fp32 master weight its exact mask in place (with the flips), then its
        `dtype` cast packed both ways under that mask in one launch. None unless Y and dX both run sparse with the
        fused kernels."""
        out_f, in_f = weight.shape
        if not ({"fwd", "dx"} <= self.products and weight.is_contiguous() and out_f % FEATURE_MULTIPLE == 0
                and in_f % FEATURE_MULTIPLE == 0 and weight.dtype in (torch.float32, *SPARSE_DTYPES)
                and self._kernels_for_dtype(dtype, weight.device) is not None):
            return None
        from sparse_core.kernels import refresh_transposable_compress, refresh_transposable_mask, transposable_compress

        with torch.no_grad():
            if weight.dtype == dtype:
                fwd, bwd, flips = refresh_transposable_compress(weight, mask)
            else:  # exact in fp32; NaN is the training guard's
                flips = refresh_transposable_mask(weight, mask, check_nan=False)
                fwd, bwd, _ = transposable_compress(weight.to(dtype), mask)
        return flips, CusparseltPlan(fwd, bwd, True, True)

    # ---- products -----------------------------------------------------------------------------
    def _mm(self, a: torch.Tensor, b: torch.Tensor, transpose_result: bool,
            bias: torch.Tensor | None = None) -> torch.Tensor:
        """cuSPARSELt A @ B (+ bias per row, in the epilogue; or the transpose), with the algorithm searched once
        per shape/layout."""
        alg = 0
        key = (a.shape, b.shape, b.stride(), b.dtype, transpose_result, b.device)
        if self.search:
            alg = self._algs.get(key, -1)
            if alg < 0:
                if torch.cuda.is_current_stream_capturing():
                    alg = 0  # no search inside a graph capture; warm-up outside it fills the cache
                else:
                    alg = int(torch._cslt_sparse_mm_search(a, b, transpose_result=transpose_result))
                    self._algs[key] = alg
        mm = self._matmul()
        if mm is torch._cslt_sparse_mm:
            return mm(a, b, bias=bias, transpose_result=transpose_result, alg_id=alg)
        from sparse_core.backends import cslt_ext

        checked = (key, alg, bias is not None)  # a layer's bias always has a's dtype and m rows
        if checked in self._checked:  # this layout passed cslt_ext's full input checks before
            return cslt_ext.sparse_mm_prechecked(a, b, transpose_result, alg, bias)
        out = mm(a, b, transpose_result=transpose_result, alg_id=alg, bias=bias)
        self._checked.add(checked)
        return out

    def _matmul(self) -> Callable[..., torch.Tensor]:
        """The sparse GEMM in use: cslt_ext.sparse_mm (mm 'plans'/'auto') when it builds, else torch._cslt_sparse_mm."""
        if self._sparse_mm is None:
            from sparse_core.backends import cslt_ext

            reason = cslt_ext.available()
            if reason is not None and self.mm == "plans":
                raise RuntimeError(f"cusparselt backend: mm='plans' was asked for but the plan-caching extension is "
                                   f"unavailable ({reason}); use mm='auto' or 'torch'")
            if reason is not None:
                warnings.warn(f"cusparselt backend: mm={self.mm!r}: the plan-caching extension is unavailable "
                              f"({reason}); using torch._cslt_sparse_mm (0.4-0.7 ms host time per call)", stacklevel=4)
            self._sparse_mm = torch._cslt_sparse_mm if reason is not None else cslt_ext.sparse_mm
        return self._sparse_mm

    @torch.compiler.disable
    def linear(self, x: torch.Tensor, plan: CusparseltPlan, bias: torch.Tensor | None = None) -> torch.Tensor:
        if not plan.fwd_sparse:
            return F.linear(x, plan.fwd, bias)
        tokens = x.shape[0]
        y = self._mm(plan.fwd, _pad_rows(x, TOKEN_MULTIPLE).t(), transpose_result=True, bias=bias)  # (T, out)
        return y[:tokens]

    @torch.compiler.disable
    def grad_input(self, dy: torch.Tensor, plan: CusparseltPlan) -> torch.Tensor:
        if not plan.bwd_sparse:
            return dy @ plan.bwd
        tokens = dy.shape[0]
        dx = self._mm(plan.bwd, _pad_rows(dy, TOKEN_MULTIPLE).t(), transpose_result=True)  # (T, in)
        return dx[:tokens]

    @torch.compiler.disable
    def grad_weight(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        return self._grad_weight(dy, x, mvue, generator, with_bias=False)[0]

    @torch.compiler.disable
    def grad_weight_and_bias(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dw, db = self._grad_weight(dy, x, mvue, generator, with_bias=True)
        return dw, dy.sum(0) if db is None else db

    def _grad_weight(
        self, dy: torch.Tensor, x: torch.Tensor, mvue: bool, generator: torch.Generator | None, with_bias: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """dW, and with_bias the bias gradient where the fused MVUE + compress pass of a sparse dW makes it from
        the same read of dY (None elsewhere: the caller sums dY)."""
        if not mvue:
            return dy.t() @ x, None
        k = self._kernels_for(dy)
        pad = (-dy.shape[0]) % TOKEN_MULTIPLE
        sparse = self._dw_sparse(dy, x)
        if k is not None and generator is None and dy.shape[1] % FEATURE_MULTIPLE == 0:
            # MVUE of dY^T in one Triton pass; its seed comes from torch's CUDA generator (graph-safe, checkpointed)
            dy_p = F.pad(dy, (0, 0, 0, pad)) if pad else dy
            seed = torch.randint(0, 2**62, (1,), device=dy.device, dtype=torch.int64)
            if not sparse:
                return k.mvue_dense_t(dy_p, seed)[:, : dy.shape[0]] @ x, None
            st_c, db = k.mvue_t(dy_p, seed, return_sum=True) if with_bias else (k.mvue_t(dy_p, seed), None)
            return self._mm(st_c, _pad_rows(x, TOKEN_MULTIPLE), transpose_result=False), db  # (out, in)
        st = mvue_tokens(dy, generator)  # (out, T), same draws as the reference backend
        if not sparse:
            return st @ x, None
        st = F.pad(st, (0, pad)) if pad else st
        # inside a graph capture: cuSPARSELt's own compress (the fused magnitude-rule kernel on S
        # replayed ~100x slower in a graph on the H200, 2026-11-30; not yet explained)
        st_c = _torch_compress(st) if torch.cuda.is_current_stream_capturing() else self._compress_s(st)
        return self._mm(st_c, _pad_rows(x, TOKEN_MULTIPLE), transpose_result=False), None  # (out, in)

    def _dw_sparse(self, dy: torch.Tensor, x: torch.Tensor) -> bool:
        return ("dw" in self.products and dy.dtype in SPARSE_DTYPES and dy.dtype == x.dtype
                and dy.shape[1] % FEATURE_MULTIPLE == 0 and x.shape[1] % FEATURE_MULTIPLE == 0)


def _variant(name: str, products: tuple[str, ...]) -> type[CusparseltBackend]:
    return type(f"Cusparselt_{name.replace('-', '_')}", (CusparseltBackend,),
                {"name": name, "default_products": frozenset(products),
                 "__doc__": f"cuSPARSELt backend with sparse products {products}."})


CusparseltFwd = _variant("cusparselt-fwd", ("fwd",))
CusparseltFwdDx = _variant("cusparselt-fwd-dx", ("fwd", "dx"))
CusparseltAll = _variant("cusparselt-all", ("fwd", "dx", "dw"))
VARIANTS = (CusparseltFwd, CusparseltFwdDx, CusparseltAll)


def _register() -> None:
    from sparse_core.backends import register_backend

    register_backend(CusparseltBackend, fast=True)
    for cls in VARIANTS:
        register_backend(cls)


_register()
