"""CUDA-graph capture of a sparse FFN step: replays match eager, follow weight updates, accumulate grads."""

import pytest
import torch
import torch.nn as nn

from sparse_core.backends import BACKENDS
from sparse_core.graphs import GraphedStep
from sparse_core.linear import SparseLinear

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def ffn(backend: str, mvue: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)).cuda().bfloat16()
    for i in (0, 2):
        m[i] = SparseLinear.from_dense(m[i], mask_kind="transposable", mvue=mvue, backend=backend)
    return m


def grads(m: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("backend", ["reference", "cusparselt-fwd-dx"])
def test_replay_matches_eager_and_follows_weight_updates(backend):
    if backend != "reference" and BACKENDS[backend].unavailable_reason(torch.device("cuda")):
        pytest.skip("no cuSPARSELt")
    g_model, e_model = ffn(backend), ffn(backend)
    x = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16)
    step = GraphedStep(lambda inp: g_model(inp).backward(gy), g_model, (x,))
    assert all(float(p.grad.abs().sum()) == 0 for p in g_model.parameters())
    for it in range(3):
        xi = torch.randn_like(x)
        step(xi)
        e_model(xi.detach().requires_grad_(True)).backward(gy)
        for a, b in zip(grads(g_model), grads(e_model)):
            assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2), it
        with torch.no_grad():  # an "optimizer step" on both, then fresh grads
            for pg, pe in zip(g_model.parameters(), e_model.parameters()):
                pg.sub_(0.5 * pg.grad)
                pe.sub_(0.5 * pe.grad)
                pg.grad.zero_()
                pe.grad.zero_()
        for m in (g_model, e_model):
            for layer in (m[0], m[2]):
                layer.refresh_mask()


def test_replays_accumulate_gradients():
    if BACKENDS["cusparselt-all"].unavailable_reason(torch.device("cuda")):
        pytest.skip("no cuSPARSELt")
    m = ffn("cusparselt-all", mvue=False)
    x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    step = GraphedStep(lambda: m(x).backward(gy), m, ())
    step()
    once = grads(m)
    step()
    for a, b in zip(grads(m), once):
        assert torch.allclose(a.float(), 2 * b.float(), rtol=1e-2, atol=1e-2)


def test_changed_mode_needs_recapture():
    if BACKENDS["cusparselt-fwd-dx"].unavailable_reason(torch.device("cuda")):
        pytest.skip("no cuSPARSELt")
    m = ffn("cusparselt-fwd-dx")
    x = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    step = GraphedStep(lambda: m(x).sum().backward(), m, ())
    assert step.matches_model()
    m[0].mode = "dense"
    assert not step.matches_model()  # what a recipe checks before each replay (nanogpt train.cuda_graph)
    with pytest.raises(RuntimeError, match="capture the graph again"):
        step()
