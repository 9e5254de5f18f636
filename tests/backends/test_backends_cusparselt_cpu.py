"""CPU checks of the cuSPARSELt backend: options, availability, backend resolution, graph helper refusal."""

import pytest
import torch

from sparse_core.backends import BACKENDS, available_backends, resolve_backend
from sparse_core.backends.cusparselt import CusparseltBackend, parse_products
from sparse_core.kernels import has_triton
from sparse_core.linear import SparseLinear


def test_registered_names():
    for name in ("cusparselt", "cusparselt-fwd", "cusparselt-fwd-dx", "cusparselt-all"):
        assert name in BACKENDS
    assert BACKENDS["cusparselt-all"]().products == frozenset({"fwd", "dx", "dw"})
    assert BACKENDS["cusparselt-fwd"]().products == frozenset({"fwd"})


def test_unavailable_on_cpu_and_auto_falls_back():
    reason = CusparseltBackend.unavailable_reason(torch.device("cpu"))
    assert reason is not None and "CUDA" in reason
    assert available_backends("cpu")["cusparselt"] == reason
    assert resolve_backend("auto", "cpu").name == "reference"


def test_forcing_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="cusparselt.*cannot run on cpu"):
        resolve_backend("cusparselt", "cpu")
    layer = SparseLinear(32, 32, backend="cusparselt-all")
    with pytest.raises(ValueError, match="cannot run on cpu"):
        layer(torch.randn(4, 32))


def test_auto_layer_runs_reference_on_cpu():
    layer = SparseLinear(32, 64)
    assert layer.backend.name == "reference"
    assert layer(torch.randn(3, 32)).shape == (3, 64)


@pytest.mark.parametrize("value, expected", [("fwd,dx", {"fwd", "dx"}), ("dw", {"dw"}), (("fwd",), {"fwd"}), ("", set())])
def test_parse_products(value, expected):
    assert parse_products(value) == frozenset(expected)


@pytest.mark.parametrize("kwargs, match", [({"products": "fwd,dgrad"}, "dgrad"), ({"compress": "cuda"}, "cuda")])
def test_bad_options_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CusparseltBackend(**kwargs)


def test_env_switches(monkeypatch):
    monkeypatch.setenv("SPARSE_CORE_CUSPARSELT_PRODUCTS", "fwd")
    monkeypatch.setenv("SPARSE_CORE_CUSPARSELT_COMPRESS", "torch")
    monkeypatch.setenv("SPARSE_CORE_CUSPARSELT_SEARCH", "0")
    b = CusparseltBackend()
    assert b.products == frozenset({"fwd"}) and b.compress == "torch" and b.search is False
    assert BACKENDS["cusparselt-all"]().products == frozenset({"fwd", "dx", "dw"})  # names fix their products
    monkeypatch.setenv("SPARSE_CORE_CUSPARSELT_SEARCH", "yes")
    with pytest.raises(ValueError, match="yes"):
        CusparseltBackend()


def test_default_products():
    b = CusparseltBackend(compress="torch")
    assert b.products == frozenset({"fwd", "dx"})  # dW stays dense: torch's compression of dY^T costs what it saves
    assert "torch._cslt_compress" in b.describe()
    fused = CusparseltBackend(compress="auto")  # with the fused MVUE + compress kernel, dW runs sparse too
    assert fused.products == (frozenset({"fwd", "dx", "dw"}) if has_triton() else frozenset({"fwd", "dx"}))


def test_matmul_option(monkeypatch):
    """mm='auto' | 'plans' | 'torch' (env SPARSE_CORE_CUSPARSELT_MM); an extension that cannot build warns and
    leaves torch's op in use."""
    assert CusparseltBackend(compress="torch").mm == "auto"
    assert CusparseltBackend(compress="torch", mm="torch")._matmul() is torch._cslt_sparse_mm
    with pytest.raises(ValueError, match="cublas"):
        CusparseltBackend(mm="cublas")
    monkeypatch.setenv("SPARSE_CORE_CUSPARSELT_MM", "plans")
    b = CusparseltBackend(compress="torch")
    assert b.mm == "plans" and "mm=plans" in b.describe()
    if torch.cuda.is_available():
        pytest.skip("has CUDA: the extension may build")
    with pytest.raises(RuntimeError, match="mm='plans' was asked for"):
        b._matmul()
    with pytest.warns(UserWarning, match="extension is unavailable"):
        assert CusparseltBackend(compress="torch", mm="auto")._matmul() is torch._cslt_sparse_mm


def test_graphed_step_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    from sparse_core.graphs import GraphedStep

    with pytest.raises(RuntimeError, match="CUDA"):
        GraphedStep(lambda: None, torch.nn.Linear(4, 4), ())


def test_copy_plan_refuses_a_changed_structure():
    from sparse_core.backends.cusparselt import CusparseltPlan
    from sparse_core.graphs import copy_plan

    a = CusparseltPlan(torch.zeros(4, 8), torch.zeros(4, 8), True, True)
    b = CusparseltPlan(torch.ones(4, 8), torch.full((4, 8), 2.0), True, True)
    copy_plan(a, b)
    assert torch.equal(a.fwd, b.fwd) and torch.equal(a.bwd, b.bwd)
    c = CusparseltPlan(torch.ones(4, 8), torch.ones(4, 8), True, False)
    with pytest.raises(RuntimeError, match="capture"):
        copy_plan(a, c)
