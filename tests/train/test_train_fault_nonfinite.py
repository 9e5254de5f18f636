"""NonFiniteGuard + loss_is_finite: NaN losses/grads are skipped and counted, K in a row stop the run with an
explanation, and the counts survive a checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from sparse_core.train import (
    CheckpointManager,
    NonFiniteGuard,
    TrainingDiverged,
    loss_is_finite,
    optimizer_step,
    restore,
)


def _loop(guard: NonFiniteGuard, model: nn.Module, opt: torch.optim.Optimizer, steps: range, poison: set,
          nan_grad: set) -> list[int]:
    """A tiny loop wired as the recipes should be; returns the steps whose update was applied."""
    applied = []
    for step in steps:
        loss = model(torch.randn(8, 4)).pow(2).mean()
        if step in poison:
            loss = loss * float("nan")
        if not loss_is_finite(loss):  # skip backward and step; counted by the guard
            opt.zero_grad(set_to_none=True)
            guard.update(step, skipped=True, loss=loss)
            continue
        loss.backward()
        if step in nan_grad:
            model.weight.grad[0, 0] = math.inf
        result = optimizer_step(model, opt, step=step)
        guard.update(step, skipped=result.skipped, loss=loss, grad_norm=result.grad_norm)
        if not result.skipped:
            applied.append(step)
    return applied


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_skips_are_counted_and_a_good_step_resets_the_streak():
    model, opt = _setup()
    guard = NonFiniteGuard(max_consecutive=3)
    before = [p.detach().clone() for p in model.parameters()]
    applied = _loop(guard, model, opt, range(0, 2), poison={0}, nan_grad={1})
    assert applied == [] and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert guard.metrics() == {"train/skipped_steps": 2.0, "train/consecutive_skipped": 2.0}
    assert _loop(guard, model, opt, range(2, 4), poison=set(), nan_grad=set()) == [2, 3]
    assert guard.metrics() == {"train/skipped_steps": 2.0, "train/consecutive_skipped": 0.0}


def test_k_consecutive_bad_steps_raise_with_explanation_and_reset_streak():
    model, opt = _setup()
    guard = NonFiniteGuard(max_consecutive=3)
    _loop(guard, model, opt, range(0, 5), poison={1}, nan_grad={2})  # 2 bad, then good steps
    with pytest.raises(TrainingDiverged) as info:
        _loop(guard, model, opt, range(5, 20), poison={7, 8}, nan_grad={9})
    msg = str(info.value)
    assert "3 optimizer steps in a row (steps 7..9)" in msg and "5 skipped in total" in msg
    assert "step 7: loss nan" in msg and "step 9:" in msg and "grad norm inf" in msg
    assert "lower learning rate" in msg and "data" in msg and "GradScaler" in msg
    assert isinstance(info.value, RuntimeError)
    assert guard.state_dict() == {"total": 5, "consecutive": 0}  # a resumed run gets a fresh allowance


def test_guard_state_survives_checkpoint_round_trip(tmp_path):
    guard = NonFiniteGuard(max_consecutive=4)
    for step in range(3):
        guard.update(step, skipped=True, loss=float("inf"))
    CheckpointManager(tmp_path).save(3, {"guard": guard})  # weights_only-loadable plain ints
    resumed = NonFiniteGuard(max_consecutive=4)
    restore({"guard": resumed}, CheckpointManager(tmp_path).load_latest()[1])
    assert resumed.state_dict() == {"total": 3, "consecutive": 3}
    with pytest.raises(TrainingDiverged, match="steps 0..3"):
        resumed.update(3, skipped=True)  # the streak continued across the resume


def test_bad_arguments_are_named():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_consecutive"):
            NonFiniteGuard(bad)
    guard = NonFiniteGuard(2)
    with pytest.raises(ValueError, match="step"):
        guard.update(-1, skipped=True)
    with pytest.raises(ValueError, match="'total'"):
        guard.load_state_dict({"consecutive": 0})
    with pytest.raises(ValueError, match="'consecutive'"):
        guard.load_state_dict({"total": 1, "consecutive": -2})
    with pytest.raises(TypeError, match="tensor"):
        loss_is_finite(float("nan"))
    assert loss_is_finite(torch.tensor([1.0, 2.0])) and not loss_is_finite(torch.tensor([1.0, -math.inf]))


def test_fp16_scaler_skips_count_too():
    model, opt = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    guard = NonFiniteGuard(max_consecutive=2)
    scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
    model.weight.grad[0, 0] = math.inf  # an overflow: the scaler backs off and the step is skipped
    result = optimizer_step(model, opt, scaler=scaler, step=0)
    guard.update(0, skipped=result.skipped, grad_norm=result.grad_norm)
    assert result.skipped and guard.metrics()["train/skipped_steps"] == 1.0


def test_finite_grads_whose_norm_overflows_are_not_applied_through_the_scaler():
    """Every grad finite (3e19) but their L2 norm overflows float32: the step is reported skipped, so it must not
    happen. scaler.step would apply it (it skips only on an inf / NaN grad), and with clipping AdamW would still
    move the weights through its weight decay."""
    model, _ = _setup()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad.fill_(3e19 * scaler.get_scale())
    result = optimizer_step(model, opt, scaler=scaler, clip_norm=1.0, step=0)
    assert result.skipped and not math.isfinite(result.grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not opt.state
