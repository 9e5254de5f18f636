"""LR schedules at known points, and set_lr."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_core.train.schedules import one_cycle_lr, set_lr, warmup_cosine_lr


def test_warmup_cosine_points():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine_lr(4, **kw) == pytest.approx(0.5)
    assert warmup_cosine_lr(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(60, **kw) == pytest.approx(0.55)  # half-way through the cosine
    assert warmup_cosine_lr(110, **kw) == pytest.approx(0.1)
    assert warmup_cosine_lr(500, **kw) == pytest.approx(0.1)
    lrs = [warmup_cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert warmup_cosine_lr(0, base_lr=1.0, warmup_steps=0, total_steps=5, min_lr=0.0) == 1.0


def test_warmup_cosine_rejects_bad_args():
    with pytest.raises(ValueError, match="min_lr"):
        warmup_cosine_lr(0, base_lr=1.0, warmup_steps=1, total_steps=10, min_lr=2.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_lr(0, base_lr=1.0, warmup_steps=20, total_steps=10, min_lr=0.0)
    with pytest.raises(ValueError, match="step"):
        warmup_cosine_lr(-1, base_lr=1.0, warmup_steps=1, total_steps=10, min_lr=0.0)


def test_one_cycle_triangle():
    kw = dict(base_lr=2.0, total_steps=100, warmup_fraction=0.25, final_fraction=0.0)
    assert one_cycle_lr(0, **kw) == 0.0
    assert one_cycle_lr(12.5, **kw) == pytest.approx(1.0)
    assert one_cycle_lr(25, **kw) == pytest.approx(2.0)
    assert one_cycle_lr(62.5, **kw) == pytest.approx(1.0)
    assert one_cycle_lr(100, **kw) == pytest.approx(0.0)
    assert one_cycle_lr(150, **kw) == pytest.approx(0.0)
    assert one_cycle_lr(100, **{**kw, "final_fraction": 0.1}) == pytest.approx(0.2)
    assert one_cycle_lr(3600.0, base_lr=1.0, total_steps=7200.0, warmup_fraction=0.5, final_fraction=0.0) == 1.0
    with pytest.raises(ValueError, match="warmup_fraction"):
        one_cycle_lr(0, **{**kw, "warmup_fraction": 1.5})


def test_set_lr_with_lr_scale():
    w = torch.nn.Parameter(torch.zeros(2))
    v = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [v], "lr_scale": 0.5}], lr=1.0)
    set_lr(opt, 0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]
    with pytest.raises(ValueError, match="lr"):
        set_lr(opt, math.nan)
