"""Gated activations (GEGLU, SwiGLU) on the GEMM output in whatever layout it comes in.

y is (tokens, 2H) with y[:, :H] the gate and y[:, H:] the value: z = act(gate) * value. The sparse GEMM
writes Y column-major (y = Y^T viewed transposed); the kernels read y through its strides, each program
a tile of the gate and the matching tile of the value, both contiguous along tokens, so every byte
crosses DRAM once and no transpose copy is made. Outputs keep y's memory order.
acts: 'gelu' (erf), 'gelu_tanh', 'silu'. Arithmetic in float32.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from sparse_core.kernels._triton import has_triton, require_launch

__all__ = ["gated_forward", "gated_backward", "torch_gated_forward", "torch_gated_backward", "geglu", "swiglu", "ACTS"]

ACTS = {"gelu": 0, "gelu_tanh": 1, "silu": 2}

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _act_and_grad(g, ACT: tl.constexpr):
        """act(g) and act'(g) in float32."""
        if ACT == 0:
            cdf = 0.5 * (1.0 + tl.math.erf(g * 0.7071067811865476))
            return g * cdf, cdf + g * tl.exp(-0.5 * g * g) * 0.3989422804014327
        elif ACT == 1:
            inner = 0.7978845608028654 * (g + 0.044715 * g * g * g)
            t = 2.0 * tl.sigmoid(2.0 * inner) - 1.0  # tanh
            dinner = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * g * g)
            return 0.5 * g * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * dinner
        else:
            s = tl.sigmoid(g)
            return g * s, s * (1.0 + g * (1.0 - s))

    @triton.jit
    def _gated_kernel(y_ptr, syt, syh, dz_ptr, o_ptr, sot, soh, dy_ptr, T, H,
                      ACT: tl.constexpr, BACKWARD: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr):
        t = tl.program_id(0) * BT + tl.arange(0, BT)[:, None]
        h = tl.program_id(1) * BH + tl.arange(0, BH)[None, :]
        ok = (t < T) & (h < H)
        t64 = t.to(tl.int64)
        h64 = h.to(tl.int64)  # column-major y: (h + H) * syh = (h + H) * tokens passes 2**31 at 128k x 16k
        g = tl.load(y_ptr + t64 * syt + h64 * syh, mask=ok, other=0.0).to(tl.float32)
        v = tl.load(y_ptr + t64 * syt + (h64 + H) * syh, mask=ok, other=0.0).to(tl.float32)
        a, da = _act_and_grad(g, ACT)
        if BACKWARD:
            dz = tl.load(dz_ptr + t64 * sot + h64 * soh, mask=ok, other=0.0).to(tl.float32)
            ty = dy_ptr.dtype.element_ty
            tl.store(dy_ptr + t64 * syt + h64 * syh, (dz * v * da).to(ty), mask=ok)
            tl.store(dy_ptr + t64 * syt + (h64 + H) * syh, (dz * a).to(ty), mask=ok)
        else:
            tl.store(o_ptr + t64 * sot + h64 * soh, (a * v).to(o_ptr.dtype.element_ty), mask=ok)


def _check(y: torch.Tensor, act: str) -> int:
    if act not in ACTS:
        raise ValueError(f"act must be one of {sorted(ACTS)}, got {act!r}")
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y must be a floating tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.dim() != 2 or y.shape[1] % 2:
        raise ValueError(f"y must be 2-D (tokens, 2H) with an even last dim, got shape {tuple(y.shape)}")
    return y.shape[1] // 2


def _like(y: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """An empty (rows, cols) tensor in y's memory order (column-major when y is)."""
    if y.stride(0) == 1 and y.stride(1) != 1:
        return torch.empty(cols, rows, dtype=y.dtype, device=y.device).t()
    return torch.empty(rows, cols, dtype=y.dtype, device=y.device)


def _blocks(y: torch.Tensor) -> tuple[int, int]:
    return (128, 32) if y.stride(0) == 1 else (32, 128)


def gated_forward(y: torch.Tensor, act: str) -> torch.Tensor:
    """z = act(y[:, :H]) * y[:, H:] (tokens, H), in y's memory order."""
    H = _check(y, act)
    require_launch(y, "gated_forward")
    T = y.shape[0]
    z = _like(y, T, H)
    bt, bh = _blocks(y)
    grid = (triton.cdiv(T, bt), triton.cdiv(H, bh))
    _gated_kernel[grid](y, y.stride(0), y.stride(1), y, z, z.stride(0), z.stride(1), y, T, H,
                        ACT=ACTS[act], BACKWARD=False, BT=bt, BH=bh)
    return z


def gated_backward(y: torch.Tensor, dz: torch.Tensor, act: str) -> torch.Tensor:
    """dy (tokens, 2H) in y's memory order, from the forward input y and dz (tokens, H)."""
    H = _check(y, act)
    if not isinstance(dz, torch.Tensor) or dz.shape != (y.shape[0], H) or dz.device != y.device:
        raise ValueError(f"dz must have shape {(y.shape[0], H)} on {y.device}, got {getattr(dz, 'shape', dz)}")
    require_launch(y, "gated_backward")
    T = y.shape[0]
    dy = _like(y, T, 2 * H)
    if dy.stride() != y.stride():
        raise ValueError(f"y must be row- or column-major, got strides {y.stride()}")
    bt, bh = _blocks(y)
    grid = (triton.cdiv(T, bt), triton.cdiv(H, bh))
    _gated_kernel[grid](y, y.stride(0), y.stride(1), dz, dz, dz.stride(0), dz.stride(1), dy, T, H,
                        ACT=ACTS[act], BACKWARD=True, BT=bt, BH=bh)
    return dy


def _torch_act(g: torch.Tensor, act: str) -> torch.Tensor:
    if act == "silu":
        return F.silu(g)
    return F.gelu(g, approximate="tanh" if act == "gelu_tanh" else "none")


def torch_gated_forward(y: torch.Tensor, act: str) -> torch.Tensor:
    """Plain-torch twin of `gated_forward` (float32 math)."""
    H = _check(y, act)
    yf = y.float()
    return (_torch_act(yf[:, :H], act) * yf[:, H:]).to(y.dtype)


def torch_gated_backward(y: torch.Tensor, dz: torch.Tensor, act: str) -> torch.Tensor:
    """Plain-torch twin of `gated_backward`, by autograd through the forward in float32."""
    H = _check(y, act)
    yf = y.detach().float().requires_grad_(True)
    z = _torch_act(yf[:, :H], act) * yf[:, H:]
    (g,) = torch.autograd.grad(z, yf, dz.float())
    return g.to(y.dtype)


class _Gated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, act):  # type: ignore[override]
        ctx.save_for_backward(y)
        ctx.act = act
        return gated_forward(y, act)

    @staticmethod
    def backward(ctx, dz):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return gated_backward(y, dz, ctx.act), None


def geglu(y: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GEGLU with autograd on the Triton kernels: gelu(y[:, :H]) * y[:, H:]."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _Gated.apply(y, "gelu_tanh" if approximate == "tanh" else "gelu")


def swiglu(y: torch.Tensor) -> torch.Tensor:
    """SwiGLU with autograd on the Triton kernels: silu(y[:, :H]) * y[:, H:]."""
    return _Gated.apply(y, "silu")
