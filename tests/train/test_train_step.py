"""optimizer_step: call order with the controller, clipping, skipping non-finite steps with/without a scaler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from sparse_core.train.step import optimizer_step


class Recorder:
    """Fake controller + optimizer spy: logs each call with the state it sees."""

    def __init__(self, model: nn.Module, events: list) -> None:
        self.model, self.events = model, events

    def before_optimizer_step(self, step: int) -> None:
        self.events.append(("before", step, self.model.weight.grad is not None))

    def after_optimizer_step(self, step: int) -> None:
        self.events.append(("after", step, self.model.weight.grad is None))


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events: list = []
    real_step = opt.step

    def spy_step(*a, **k):
        events.append(("optimizer.step",))
        return real_step(*a, **k)

    opt.step = spy_step
    return model, opt, events, Recorder(model, events)


def _backward(model, scale: float = 1.0, poison: bool = False) -> None:
    loss = model(torch.randn(8, 4)).pow(2).sum() * scale
    loss.backward()
    if poison:
        model.weight.grad[0, 0] = math.inf


def test_call_order_and_grad_norm():
    model, opt, events, ctl = _setup()
    _backward(model)
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    before = model.weight.detach().clone()
    res = optimizer_step(model, opt, controller=ctl, step=7)
    assert events == [("before", 7, True), ("optimizer.step",), ("after", 7, True)]  # grads zeroed before 'after'
    assert not res.skipped and res.grad_norm == pytest.approx(expected, rel=1e-5)
    assert not torch.equal(before, model.weight) and model.weight.grad is None


def test_clipping_scales_grads_and_reports_preclip_norm():
    model, opt, _, _ = _setup()
    _backward(model, scale=100.0)
    captured = {}

    class Peek:
        def before_optimizer_step(self, step):
            captured["norm"] = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()

        def after_optimizer_step(self, step):
            pass

    res = optimizer_step(model, opt, controller=Peek(), clip_norm=1.0, step=0)
    assert res.grad_norm > 10.0
    assert captured["norm"] == pytest.approx(1.0, rel=1e-4)  # the controller sees clipped grads
    with pytest.raises(ValueError, match="clip_norm"):
        optimizer_step(model, opt, clip_norm=0.0, step=0)
    with pytest.raises(ValueError, match="step"):
        optimizer_step(model, opt, step=-1)


@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_non_finite_without_scaler_skips(clip_norm):
    model, opt, events, ctl = _setup()
    _backward(model, poison=True)
    before = [p.detach().clone() for p in model.parameters()]
    res = optimizer_step(model, opt, controller=ctl, clip_norm=clip_norm, step=3)
    assert res.skipped and not math.isfinite(res.grad_norm)
    assert events == []  # neither the optimizer nor the controller ran
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_grad_scaler_normal_and_skipped_steps():
    model, opt, events, ctl = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(model(torch.randn(8, 4)).pow(2).sum()).backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item() / 2.0**10
    res = optimizer_step(model, opt, controller=ctl, scaler=scaler, clip_norm=100.0, step=0)
    assert not res.skipped and res.grad_norm == pytest.approx(expected, rel=1e-4)  # norm of unscaled grads
    assert events == [("before", 0, True), ("optimizer.step",), ("after", 0, True)]

    events.clear()
    scaler.scale(model(torch.randn(8, 4)).pow(2).sum()).backward()
    model.weight.grad[0, 0] = math.inf
    before = [p.detach().clone() for p in model.parameters()]
    res = optimizer_step(model, opt, controller=ctl, scaler=scaler, step=1)
    assert res.skipped and scaler.get_scale() == 2.0**9  # the scaler backed off
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert ("before", 1, True) not in events and ("optimizer.step",) not in events
    assert all(p.grad is None for p in model.parameters())


def test_disabled_scaler_is_a_plain_step():
    model, opt, events, _ = _setup()
    _backward(model)
    res = optimizer_step(model, opt, scaler=torch.amp.GradScaler("cpu", enabled=False), step=0)
    assert not res.skipped and events == [("optimizer.step",)]


def test_decay_param_groups_decay_matrices_only():
    from sparse_core.train import decay_param_groups

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[2].bias.requires_grad_(False)
    decay, no_decay = decay_param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in decay["params"]] == [(10, 4), (4, 4)]
    assert [tuple(p.shape) for p in no_decay["params"]] == [(4,), (4,)]  # linear bias, LayerNorm weight
