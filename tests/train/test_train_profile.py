"""ModuleTimer / time_steps on CPU: hook brackets time the right module, shares, hook removal, bad input."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn

from sparse_core.train.profile import ModuleTimer, time_steps


class _Sleep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, backward_s):  # type: ignore[override]
        ctx.backward_s = backward_s
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        time.sleep(ctx.backward_s)
        return grad, None


class SlowLayer(nn.Linear):
    """A linear layer that sleeps a known time in its forward and in its backward."""

    def __init__(self, n: int, forward_s: float, backward_s: float) -> None:
        super().__init__(n, n)
        self.forward_s, self.backward_s = forward_s, backward_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.forward_s)
        return _Sleep.apply(super().forward(x), self.backward_s)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), SlowLayer(16, 0.01, 0.03), nn.ReLU(), nn.Linear(16, 16),
                         nn.ReLU(), nn.Linear(16, 4))


def _step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    net(torch.randn(5, 8)).square().mean().backward()
    opt.step()
    opt.zero_grad()


def _hook_count(module: nn.Module) -> int:
    return sum(len(d) for d in (module._forward_pre_hooks, module._forward_hooks, module._backward_pre_hooks,
                                module._backward_hooks))


def test_brackets_each_modules_own_forward_and_backward():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    steps = 3
    with ModuleTimer([("slow", net[2]), ("fast", net[4]), ("fast", net[6])]) as timer:
        t0 = time.perf_counter()
        for _ in range(steps):
            _step(net, opt)
        wall_ms = (time.perf_counter() - t0) * 1e3
    out = timer.summary(wall_ms, steps=steps)
    slow, fast = out["groups"]["slow"], out["groups"]["fast"]
    assert out["step_ms"] == pytest.approx(wall_ms / steps) and out["steps"] == steps
    assert slow["forward_calls"] == slow["backward_calls"] == steps
    assert fast["forward_calls"] == fast["backward_calls"] == 2 * steps  # two modules in one group
    assert slow["forward_ms"] >= 10.0 and slow["backward_ms"] >= 30.0  # the sleeps, per step
    assert fast["backward_ms"] < slow["backward_ms"] - 20.0  # the slow backward is not in the later layers'
    for group in (slow, fast):
        assert group["forward_ms"] > 0 and group["backward_ms"] > 0
        assert group["total_ms"] == pytest.approx(group["forward_ms"] + group["backward_ms"])
        assert 0.0 < group["share"] <= 1.0
    assert slow["share"] + fast["share"] <= 1.0
    assert slow["share"] == pytest.approx(slow["total_ms"] / out["step_ms"])


def test_hooks_are_removed_on_exit_even_after_an_error():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [_hook_count(m) for m in net]
    timer = ModuleTimer([("a", net[4]), ("b", net[6])])
    with timer:
        assert _hook_count(net[4]) == 4 and timer.active
        _step(net, opt)
    assert [_hook_count(m) for m in net] == before and not timer.active
    calls = timer.summary(1e6)["groups"]["a"]["forward_calls"]
    _step(net, opt)  # not timed any more
    assert timer.summary(1e6)["groups"]["a"]["forward_calls"] == calls
    with pytest.raises(RuntimeError, match="boom"):
        with timer:
            raise RuntimeError("boom")
    assert [_hook_count(m) for m in net] == before


def test_input_without_grad_is_refused_but_no_grad_forward_is_fine():
    net = _net()
    with ModuleTimer([("first", net[0])]):
        with pytest.raises(ValueError, match="'first'.*requires grad"):
            net(torch.randn(2, 8))  # its full backward hook would fire before its backward ran
        with torch.no_grad():
            net(torch.randn(2, 8))
        net(torch.randn(2, 8, requires_grad=True)).sum().backward()


def test_time_steps_runs_warmup_then_two_timed_runs():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    calls = []

    def step():
        calls.append(_hook_count(net[2]))
        _step(net, opt)

    out = time_steps(step, n_warmup=2, n_steps=3, modules=[("slow", net[2])])
    assert calls == [0] * 5 + [4] * 3  # warm-up and the plain run without hooks, then the timed one with
    assert _hook_count(net[2]) == 0
    assert out["steps"] == 3 and out["warmup"] == 2 and out["device"] == "cpu"
    assert out["step_ms"] >= 40.0 and out["step_ms_hooked"] >= 40.0  # the sleeps
    group = out["groups"]["slow"]
    assert group["forward_calls"] == 3 and group["backward_ms"] >= 30.0 and 0.0 < group["share"] <= 1.0


def test_bad_inputs_give_clear_errors():
    net = _net()
    with pytest.raises(ValueError, match="non-empty list"):
        ModuleTimer([])
    with pytest.raises(ValueError, match="non-empty list"):
        ModuleTimer(net)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pair"):
        ModuleTimer([net[0]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="pair"):
        ModuleTimer([("", net[0])])
    with pytest.raises(ValueError, match="twice"):
        ModuleTimer([("a", net[0]), ("b", net[0])])
    with pytest.raises(ValueError, match="'all' contains"):
        ModuleTimer([("all", net), ("one", net[2])])
    timer = ModuleTimer([("a", net[2])])
    with pytest.raises(RuntimeError, match="measured nothing"):
        timer.summary(10.0)
    with timer:
        with pytest.raises(RuntimeError, match="already active"):
            timer.__enter__()
        net(torch.randn(2, 8)).sum().backward()
    for bad in (0, -1.0, float("nan"), True, "10"):
        with pytest.raises(ValueError, match="step_ms_total"):
            timer.summary(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must"):
        timer.summary(100.0, steps=0)
    with pytest.raises(ValueError, match="less than"):
        timer.summary(1.0)  # the module alone took > 40 ms (its sleeps): 1 ms cannot be the step total
    with pytest.raises(ValueError, match="n_steps"):
        time_steps(lambda: None, 0, 0, [("a", net[2])])
    with pytest.raises(ValueError, match="n_warmup"):
        time_steps(lambda: None, -1, 1, [("a", net[2])])
    with pytest.raises(TypeError, match="callable"):
        time_steps(None, 0, 1, [("a", net[2])])  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_time_a_wide_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 4096), nn.GELU(), nn.Linear(4096, 1024)).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = torch.randn(8192, 1024, device="cuda")

    def step():
        net(x).square().mean().backward()
        opt.step()
        opt.zero_grad()

    out = time_steps(step, n_warmup=3, n_steps=5, modules=[("wide", net[2])])
    group = out["groups"]["wide"]
    assert out["device"].startswith("cuda") and group["forward_calls"] == group["backward_calls"] == 5
    assert 0.0 < group["forward_ms"] < group["backward_ms"]  # backward: two GEMMs (dX, dW) to forward's one
    assert 0.0 < group["share"] < 1.0
