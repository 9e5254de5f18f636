"""masked_decay_ and the gated activations (forward, backward, both memory orders) against torch."""

import pytest
import torch

from sparse_core.kernels import (
    gated_backward,
    gated_forward,
    geglu,
    masked_decay_,
    swiglu,
    torch_gated_backward,
    torch_gated_forward,
    torch_masked_decay_,
)

from kernels_testutil import DEVICE, ON_GPU, gpu, needs_kernels, rand


@needs_kernels
@pytest.mark.parametrize("gdtype", [torch.float32, torch.bfloat16])
def test_masked_decay(gdtype):
    shape = (96, 64) if not ON_GPU else (3072, 768)
    g = rand(shape, gdtype, seed=1)
    w = rand(shape, torch.float32, seed=2)
    m = rand(shape, torch.float32, seed=3) > 0
    ref = torch_masked_decay_(g.clone().cpu(), w.cpu(), m.cpu(), 2e-4)
    out = masked_decay_(g, w, m, 2e-4)
    assert out is g
    assert torch.allclose(g.cpu().float(), ref.float(), rtol=1e-6 if gdtype == torch.float32 else 1e-2, atol=1e-7)
    assert torch.equal(g.cpu()[m.cpu()], rand(shape, gdtype, seed=1).cpu()[m.cpu()])  # kept entries untouched


@needs_kernels
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("colmajor", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gated(act, colmajor, dtype):
    T, H = (64, 48) if not ON_GPU else (4096, 1536)
    y = rand((2 * H, T), dtype, seed=4).t() if colmajor else rand((T, 2 * H), dtype, seed=4)
    dz = rand((T, H), dtype, seed=5)
    z = gated_forward(y, act)
    assert z.stride() == ((1, T) if colmajor else (H, 1))
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    assert torch.allclose(z.cpu().float(), torch_gated_forward(y.cpu(), act).float(), **tol)
    dy = gated_backward(y, dz, act)
    assert dy.stride() == y.stride()
    assert torch.allclose(dy.cpu().float(), torch_gated_backward(y.cpu(), dz.cpu(), act).float(), **tol)


@needs_kernels
def test_autograd_ops():
    y = rand((32, 64), torch.float32, seed=6).requires_grad_(True)
    for fn, act in ((geglu, "gelu"), (swiglu, "silu")):
        z = fn(y)
        (gy,) = torch.autograd.grad(z.sum(), y)
        assert torch.allclose(gy.cpu(), torch_gated_backward(y.detach().cpu(), torch.ones(32, 32), act), atol=1e-5)
    with pytest.raises(ValueError, match="act"):
        gated_forward(y.detach(), "relu")
