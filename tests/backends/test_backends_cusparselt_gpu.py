"""GPU checks of the cuSPARSELt backend against the reference backend (bf16 tolerance, identical masks)."""

import copy
import warnings

import pytest
import torch
import torch.nn as nn

from sparse_core.backends import BACKENDS
from sparse_core.linear import SparseLinear

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _fast_available() -> None:
    reason = BACKENDS["cusparselt"].unavailable_reason(torch.device("cuda"))
    if reason:
        pytest.skip(reason)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def twin_layers(in_f, out_f, backend, mask_kind="transposable", mvue=False, dtype=torch.bfloat16, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias, device="cuda", dtype=dtype)
    ref = SparseLinear.from_dense(copy.deepcopy(lin), mask_kind=mask_kind, mvue=mvue, backend="reference")
    fast = SparseLinear.from_dense(lin, mask_kind=mask_kind, mvue=mvue, backend=backend)
    for layer in (ref, fast):
        layer.generator = torch.Generator(device="cuda").manual_seed(seed + 1)
    return ref, fast


def run(layer, x, gy):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(gy)
    return y, x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad


@pytest.mark.parametrize("backend", ["cusparselt", "cusparselt-fwd", "cusparselt-fwd-dx", "cusparselt-all"])
@pytest.mark.parametrize("mvue", [False, True])
@pytest.mark.parametrize("shape, lead", [((256, 512), (2, 512)), ((96, 160), (2, 500)), ((512, 128), (1000,))])
def test_products_match_reference(backend, mvue, shape, lead):
    _fast_available()
    in_f, out_f = shape
    ref, fast = twin_layers(in_f, out_f, backend, mvue=mvue)
    x = torch.randn(*lead, in_f, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(*lead, out_f, device="cuda", dtype=torch.bfloat16)
    outs_ref, outs_fast = run(ref, x, gy), run(fast, x, gy)
    for name, a, b in zip(("y", "dx", "dw", "db"), outs_fast, outs_ref):
        assert a.shape == b.shape, name
        assert rel(a, b) < 1e-2, (name, rel(a, b))
    assert torch.equal(ref.mask, fast.mask)


def _decompress(compressed: torch.Tensor, cols: int) -> torch.Tensor:
    eye = torch.eye(cols, device=compressed.device, dtype=compressed.dtype)
    return torch._cslt_sparse_mm(compressed, eye)  # A @ I = A, exact (one non-zero product per entry)


def test_compressed_operands_hold_the_masked_weight_exactly():
    _fast_available()
    _, fast = twin_layers(256, 384, "cusparselt-all")
    plan = fast.plan(torch.bfloat16)
    assert plan.fwd_sparse and plan.bwd_sparse
    w = fast.effective_weight(torch.bfloat16)
    assert torch.equal(_decompress(plan.fwd, 256), w)
    assert torch.equal(_decompress(plan.bwd, 384), w.t())
    assert torch.equal(_decompress(plan.fwd, 256) != 0, fast.mask)  # identical masks (weights are non-zero)


def test_magnitude_mask_keeps_dx_dense_and_correct():
    _fast_available()
    ref, fast = twin_layers(128, 256, "cusparselt-all", mask_kind="magnitude", mvue=True)
    plan = fast.plan(torch.bfloat16)
    assert plan.fwd_sparse and not plan.bwd_sparse
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    for a, b in zip(run(fast, x, gy), run(ref, x, gy)):
        assert rel(a, b) < 1e-2


@pytest.mark.parametrize("dtype, in_f", [(torch.float32, 128), (torch.bfloat16, 48)])
def test_unsupported_layers_run_dense_with_a_warning(dtype, in_f):
    _fast_available()
    ref, fast = twin_layers(in_f, 64, "cusparselt-all", dtype=dtype, mvue=True)
    x = torch.randn(40, in_f, device="cuda", dtype=dtype)
    gy = torch.randn(40, 64, device="cuda", dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = run(fast, x, gy)
    assert any("runs dense" in str(w.message) for w in caught)
    assert not fast.plan(dtype).fwd_sparse
    for a, b in zip(outs, run(ref, x, gy)):
        assert rel(a, b) < (1e-5 if dtype == torch.float32 else 1e-2)


def test_autocast_fp32_master_weights():
    _fast_available()
    ref, fast = twin_layers(256, 256, "cusparselt-all", dtype=torch.float32, mvue=True)
    x = torch.randn(128, 256, device="cuda")
    gy = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs_fast, outs_ref = run(fast, x, gy), run(ref, x, gy)
    assert fast.plan(torch.bfloat16).fwd_sparse
    assert fast.weight.grad.dtype == torch.float32
    for a, b in zip(outs_fast, outs_ref):
        assert rel(a, b) < 1e-2


def test_algorithm_search_runs_once_per_shape():
    _fast_available()
    _, fast = twin_layers(256, 512, "cusparselt-fwd")
    backend = fast.backend
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    fast(x)
    n = len(backend._algs)
    assert n >= 1
    fast(torch.randn(64, 256, device="cuda", dtype=torch.bfloat16))
    assert len(backend._algs) == n


def test_plan_rebuilt_once_per_weight_change():
    _fast_available()
    _, fast = twin_layers(128, 128, "cusparselt-fwd-dx")
    p1 = fast.plan(torch.bfloat16)
    assert fast.plan(torch.bfloat16) is p1  # micro-batches reuse it
    with torch.no_grad():
        fast.weight.mul_(2.0)
    p2 = fast.plan(torch.bfloat16)
    assert p2 is not p1
    assert torch.equal(_decompress(p2.fwd, 128), fast.effective_weight(torch.bfloat16))


def test_torch_compile_works_through_the_layer():
    _fast_available()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128)).cuda().bfloat16()
    model[0] = SparseLinear.from_dense(model[0], mask_kind="transposable", backend="cusparselt-fwd-dx")
    model[2] = SparseLinear.from_dense(model[2], mask_kind="transposable", backend="cusparselt-fwd-dx")
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    eager = model(x)
    compiled = torch.compile(model)
    out = compiled(x)
    out.float().sum().backward()
    assert rel(out, eager) < 1e-2
    assert model[0].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()


def _kernels_or_skip(backend):
    if backend.kernels() is None:
        pytest.skip("sparse_core.kernels not importable")
    if not backend._kernels_for(torch.empty(1, device="cuda", dtype=torch.bfloat16)):
        pytest.fail("fused compress kernels differ from torch._cslt_compress on this stack")


@pytest.mark.parametrize("compress", ["torch", "triton"])
def test_compress_paths_give_the_same_operands(compress):
    _fast_available()
    from sparse_core.backends.cusparselt import CusparseltBackend

    backend = CusparseltBackend(products="fwd,dx,dw", compress=compress)
    if compress == "triton":
        _kernels_or_skip(backend)
    _, fast = twin_layers(256, 384, "cusparselt-all")
    plan = backend.prepare(fast._operands(torch.bfloat16))
    w = fast.effective_weight(torch.bfloat16)
    assert torch.equal(_decompress(plan.fwd, 256), w)
    assert torch.equal(_decompress(plan.bwd, 384), w.t())


def test_fused_mvue_dw_is_unbiased():
    _fast_available()
    from sparse_core.backends.cusparselt import CusparseltBackend

    backend = CusparseltBackend(products="fwd,dx,dw", compress="triton")
    _kernels_or_skip(backend)
    torch.manual_seed(0)
    dy = torch.randn(1000, 256, device="cuda", dtype=torch.bfloat16)  # 1000 tokens: padded to 1024
    x = torch.randn(1000, 128, device="cuda", dtype=torch.bfloat16)
    exact = dy.float().t() @ x.float()
    draws = [backend.grad_weight(dy, x, True, None).float() for _ in range(64)]
    single = sum(rel(d, exact) for d in draws) / len(draws)
    mean = rel(torch.stack(draws).mean(0), exact)
    assert 0.05 < single < 2.0
    assert mean < 0.3 * single  # independent unbiased draws: error falls like 1/sqrt(64) = 0.125


def test_fused_mvue_pass_gives_the_bias_gradient():
    """Sparse dW through the fused MVUE + compress kernel: db comes from the same pass; same dW draws as without."""
    _fast_available()
    from sparse_core.backends.cusparselt import CusparseltBackend

    backend = CusparseltBackend(products="fwd,dx,dw", compress="triton")
    _kernels_or_skip(backend)
    dy = torch.randn(1000, 256, device="cuda", dtype=torch.bfloat16)  # 1000 tokens: padded to 1024
    x = torch.randn(1000, 128, device="cuda", dtype=torch.bfloat16)
    state = torch.cuda.get_rng_state()
    dw, db = backend.grad_weight_and_bias(dy, x, True, None)
    torch.cuda.set_rng_state(state)
    assert torch.equal(dw, backend.grad_weight(dy, x, True, None))  # same seed draw, same estimate
    assert db.dtype == dy.dtype and rel(db, dy.float().sum(0)) < 1e-2


@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32], ids=["bf16-weights", "fp32-master"])
def test_fused_refresh_builds_the_same_mask_and_operands(weight_dtype):
    """A mask refresh through the backend's fused pass (one launch for bf16 weights; the fp32 mask + one packing
    launch for master weights) gives the mask and compressed W, W^T of the plain path, byte for byte."""
    _fast_available()
    _, fused = twin_layers(384, 256, "cusparselt-fwd-dx", dtype=weight_dtype, seed=3)
    _kernels_or_skip(fused.backend)
    plain = copy.deepcopy(fused)
    plain._fused_refresh = lambda: None  # the mask rule + prepare path
    x = torch.randn(64, 384, device="cuda", dtype=weight_dtype)
    for step in range(3):
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            outs = [m(x) for m in (fused, plain)]  # the forward fixes the compute dtype (bf16)
        assert torch.equal(outs[0], outs[1])
        with torch.no_grad():
            for m in (fused, plain):
                m.weight.add_(0.02 * torch.cos(m.weight * (50 + step)))  # moves some entries across the mask
        calls = fused.backend.refresh_and_prepare
        seen = []
        fused.backend.refresh_and_prepare = lambda w, d, m: seen.append(d) or calls(w, d, m)
        try:
            flips = [m.refresh_mask() for m in (fused, plain)]
        finally:
            del fused.backend.refresh_and_prepare
        assert seen == [torch.bfloat16] and flips[0] == flips[1]
        assert torch.equal(fused.mask, plain.mask)
        key = fused._plan_key
        a, b = fused.plan(torch.bfloat16), plain.plan(torch.bfloat16)
        assert fused._plan_key == key  # the fused pass's plan is the one the next forward uses
        assert torch.equal(a.fwd, b.fwd) and torch.equal(a.bwd, b.bwd)
