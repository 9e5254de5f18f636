"""SparseLinear and its autograd function against the dense formulas with the same masks."""

import pytest
import torch
import torch.nn.functional as F

from sparse_core import SparseLinear, is_transposable_24, is_valid_24
from sparse_core.backends import BACKENDS, register_backend, resolve_backend
from sparse_core.backends import SparseOperands
from sparse_core.backends.reference import ReferenceBackend
from sparse_core.masks import replace_mask, transposable_mask_24
from sparse_core.linear import sparse_linear


def make(kind="magnitude", mvue=False, bias=True, dtype=torch.float64):
    torch.manual_seed(0)
    return SparseLinear(8, 12, bias=bias, dtype=dtype, mask_kind=kind, mvue=mvue, backend="reference")


@pytest.mark.parametrize("kind", ["magnitude", "transposable"])
def test_gradcheck_input_and_bias_float64(kind):
    layer = make(kind)
    plan = layer.plan(torch.float64)
    backend = layer.backend
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    w = layer.weight.detach()  # dW is a straight-through estimate, checked against its formula below
    assert torch.autograd.gradcheck(lambda x, b: sparse_linear(x, w, b, plan, backend), (x, bias))


@pytest.mark.parametrize("kind", ["magnitude", "transposable"])
def test_forward_and_grads_equal_dense_formulas(kind):
    layer = make(kind)
    mask = layer.mask.clone()
    assert is_valid_24(mask, dim=1)
    if kind == "transposable":
        assert is_transposable_24(mask)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert torch.allclose(y, F.linear(x, layer.weight * mask, layer.bias))
    dy = torch.randn_like(y)
    y.backward(dy)
    x2, dy2 = x.detach().reshape(-1, 8), dy.reshape(-1, 12)
    assert torch.allclose(x.grad.reshape(-1, 8), dy2 @ (layer.weight.detach() * mask))  # dX = dY (M*W)
    assert torch.allclose(layer.weight.grad, dy2.t() @ x2)  # dW = dY^T X, straight-through
    assert torch.allclose(layer.bias.grad, dy2.sum(0))


def test_mvue_weight_gradient_is_unbiased():
    layer = make(mvue=True)
    x = torch.randn(16, 8, dtype=torch.float64)
    dy = torch.randn(16, 12, dtype=torch.float64)
    exact = dy.t() @ x
    n, acc = 3000, torch.zeros_like(exact)
    for _ in range(n):
        layer.weight.grad = None
        layer(x).backward(dy)
        acc += layer.weight.grad
    err = (acc / n - exact).abs().max() / exact.abs().max()
    assert err < 0.03
    layer.weight.grad = None
    layer(x).backward(dy)
    assert not torch.allclose(layer.weight.grad, exact)  # a single draw is sparse, not exact


def test_mvue_handles_token_counts_not_divisible_by_4():
    layer = make(mvue=True)
    x = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_no_bias_dense_mode_and_refresh():
    layer = make(bias=False)
    x = torch.randn(4, 8, dtype=torch.float64)
    layer.mode = "dense"
    assert torch.allclose(layer(x), F.linear(x, layer.weight))
    layer.mode = "sparse"
    old = layer.mask.clone()
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    flips = layer.refresh_mask()
    assert flips == int((layer.mask != old).sum()) > 0
    assert is_valid_24(layer.mask, 1)


def test_cpu_autocast_bf16():
    layer = SparseLinear(16, 32, backend="reference")
    x = torch.randn(2, 4, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = F.linear(x, layer.weight * layer.mask, layer.bias)
    assert torch.allclose(y.float(), ref, atol=5e-2, rtol=5e-2)
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32


class CountingBackend(ReferenceBackend):
    name = "counting-test"
    prepared = 0

    def prepare(self, ops):
        CountingBackend.prepared += 1
        return super().prepare(ops)


def test_operands_built_once_per_optimizer_step():
    register_backend(CountingBackend)
    try:
        layer = SparseLinear(8, 8, backend="counting-test")
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        for _ in range(2):
            for _ in range(3):  # micro-batches
                layer(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
        assert CountingBackend.prepared == 2
        layer.refresh_mask()
        layer(torch.randn(4, 8))
        assert CountingBackend.prepared == 3
    finally:
        BACKENDS.pop("counting-test")


def test_replaced_weight_storage_rebuilds_operands_and_data_writes_need_invalidate():
    """`param.data = t` (vector_to_parameters) changes the storage: the next forward uses the new weight. A write
    through `.data` bypasses the version counter: the documented `invalidate()` makes it visible."""
    layer = SparseLinear(16, 8, bias=False, backend="reference")
    x = torch.randn(4, 16)
    layer(x)
    params = list(layer.parameters())
    torch.nn.utils.vector_to_parameters(torch.zeros_like(torch.nn.utils.parameters_to_vector(params)), params)
    assert layer(x).abs().max().item() == 0.0
    layer.weight.data.copy_(torch.randn(8, 16))
    layer.invalidate()
    assert torch.equal(layer(x), x @ (layer.weight * layer.mask).t())


class FusedRefreshBackend(CountingBackend):
    """A backend with a one-pass mask + operands (as cusparselt's kernels): the plain rules, counted."""

    name = "fused-refresh-test"
    fused = 0

    def refresh_and_prepare(self, weight, dtype, mask):
        FusedRefreshBackend.fused += 1
        flips = replace_mask(mask, transposable_mask_24(weight))
        w = (weight * mask).to(dtype)
        return flips, ReferenceBackend.prepare(self, SparseOperands(w, mask, w, mask, True))


@pytest.mark.parametrize("kind, fused_calls", [("transposable", 2), ("magnitude", 0)])
def test_refresh_takes_the_backends_fused_pass(kind, fused_calls):
    """After a forward (the compute dtype known), a refresh gets mask and operands in one backend call, and
    the next forward uses them without a `prepare`; same outputs as the mask rule + prepare path."""
    register_backend(FusedRefreshBackend)
    try:
        torch.manual_seed(0)
        layer = SparseLinear(16, 8, mask_kind=kind, backend="fused-refresh-test")
        plain = SparseLinear(16, 8, mask_kind=kind, backend="reference")
        plain.load_state_dict(layer.state_dict())
        x = torch.randn(5, 16)
        CountingBackend.prepared = FusedRefreshBackend.fused = 0
        layer.refresh_mask()  # no forward yet: the plain rule
        layer(x)
        assert (FusedRefreshBackend.fused, CountingBackend.prepared) == (0, 1)
        for _ in range(2):
            with torch.no_grad():
                for m in (layer, plain):
                    m.weight.add_(0.3 * torch.sin(m.weight * 7))  # the same update on both
            flips = layer.refresh_mask()
            assert flips == plain.refresh_mask()
            assert torch.equal(layer.mask, plain.mask)
            assert torch.allclose(layer(x), plain(x))
        assert FusedRefreshBackend.fused == fused_calls
        assert CountingBackend.prepared == 1 + 2 - fused_calls  # a fused refresh leaves nothing to prepare
    finally:
        BACKENDS.pop("fused-refresh-test")


class BiasFromBackend(ReferenceBackend):
    """Makes db itself (as cusparselt's fused MVUE pass does), marked so the test can tell it was used."""

    name = "bias-from-backend-test"

    def grad_weight_and_bias(self, dy, x, mvue, generator):
        return self.grad_weight(dy, x, mvue, generator), dy.sum(0) + 1000.0


@pytest.mark.parametrize("weight_grad", [True, False])
def test_bias_gradient_comes_from_the_backend_with_the_weight_gradient(weight_grad):
    register_backend(BiasFromBackend)
    try:
        torch.manual_seed(0)
        layer = SparseLinear(8, 4, backend="bias-from-backend-test")
        layer.weight.requires_grad_(weight_grad)
        x = torch.randn(6, 8)
        layer(x).sum().backward()
        expected = torch.full((4,), 6.0) + (1000.0 if weight_grad else 0.0)  # without dW: the plain sum of dY
        assert torch.allclose(layer.bias.grad, expected)
        if weight_grad:
            assert torch.allclose(layer.weight.grad, (torch.ones(6, 4).t() @ x))
    finally:
        BACKENDS.pop("bias-from-backend-test")


def test_mask_kernel_switch_turns_the_fused_refresh_off(monkeypatch):
    monkeypatch.setenv("SPARSE_CORE_MASK_KERNEL", "0")
    register_backend(FusedRefreshBackend)
    try:
        layer = SparseLinear(16, 8, mask_kind="transposable", backend="fused-refresh-test")
        layer(torch.randn(3, 16))
        FusedRefreshBackend.fused = 0
        layer.refresh_mask()
        assert FusedRefreshBackend.fused == 0
    finally:
        BACKENDS.pop("fused-refresh-test")


def test_backend_resolution():
    assert resolve_backend("auto", "cpu").name == "reference"
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        resolve_backend("nope", "cpu")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: SparseLinear(6, 8), "in_features"),
        (lambda: SparseLinear(8, 10), "out_features"),
        (lambda: SparseLinear(8, 8, mode="half"), "mode"),
        (lambda: SparseLinear(8, 8, mask_kind="random"), "mask_kind"),
        (lambda: SparseLinear(8, 8, mask_refresh_interval=0), "mask_refresh_interval"),
        (lambda: SparseLinear(8, 8)(torch.randn(2, 4)), "features"),
        (lambda: SparseLinear(8, 8)(torch.randn(2, 8, dtype=torch.float64)), "dtype"),
    ],
)
def test_bad_configuration(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


class ContiguousOnlyBackend(ReferenceBackend):
    name = "contiguous-only-test"

    def linear(self, x, plan, bias=None):
        assert x.is_contiguous(), "X reached the backend non-contiguous"
        return super().linear(x, plan, bias)


def test_non_contiguous_input_and_dtype_move_rebuild_operands():
    register_backend(ContiguousOnlyBackend)
    register_backend(CountingBackend)
    try:
        layer = SparseLinear(8, 12, backend="contiguous-only-test")
        x = torch.randn(8, 5).t()  # (5, 8), not contiguous
        # float32 GEMMs of a row-major vs a transposed X may round differently (seen on the H200 host's BLAS)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight * layer.mask, layer.bias))
        layer = SparseLinear(8, 8, backend="counting-test")
        before = CountingBackend.prepared
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(torch.randn(4, 8))
            layer.to(torch.bfloat16)  # same compute dtype, but the weight itself changed
            layer(torch.randn(4, 8))
        assert CountingBackend.prepared == before + 2
    finally:
        BACKENDS.pop("contiguous-only-test")
        BACKENDS.pop("counting-test")


def test_torch_compile_traces_through_the_layer_on_cpu():
    """Dynamo (aot_eager: no C++ toolchain needed) runs the layer's operand cache and autograd function."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
    for i in (0, 2):
        model[i] = SparseLinear.from_dense(model[i], mask_kind="transposable", backend="reference")
    x = torch.randn(8, 16)
    eager = model(x)
    out = torch.compile(model, backend="aot_eager")(x)
    out.sum().backward()
    assert torch.allclose(out, eager) and torch.isfinite(model[0].weight.grad).all()
