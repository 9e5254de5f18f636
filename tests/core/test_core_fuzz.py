"""Property-based fuzzing of the public sparse_core API: every call returns a correct result or raises
ValueError/TypeError naming the bad value; never a crash deep inside, never a silently wrong result."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparse_core
from sparse_core import SparseLinear, is_valid_24, mask_24, mvue_24, transposable_mask_24

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64, torch.bool]
SPECIAL = [0.0, float("inf"), float("-inf"), float("nan"), 1e30, -1e-30]


@st.composite
def tensors(draw, max_dims=3):
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=max_dims)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * 4
    n = t.numel()
    for _ in range(draw(st.integers(0, 3)) if n else 0):
        t.view(-1)[draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIAL))
    if draw(st.booleans()) and n:
        t.view(-1)[: n // 2] = 0.0  # all-zero groups
    if dtype.is_floating_point:
        t = t.to(dtype)
    else:
        t = t.nan_to_num(0.0, 0.0, 0.0).clamp(-100, 100).to(dtype)
    if t.dim() >= 2 and draw(st.booleans()):
        t = t.transpose(0, 1)  # non-contiguous strides
    return t


def expected_failure(t, dim):
    if not t.dtype.is_floating_point:
        return TypeError
    if t.dim() == 0 or not -t.dim() <= dim < t.dim():
        return ValueError
    size = t.shape[dim]
    if t.numel() == 0 or size % 4:
        return ValueError
    return None


settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_
@given(t=tensors(), dim=st.integers(-3, 3))
def test_mask_24_fuzz(t, dim):
    err = expected_failure(t, dim)
    if err is None and torch.isnan(t).any():
        err = ValueError
    if err is not None:
        with pytest.raises(err):
            mask_24(t, dim)
        return
    m = mask_24(t, dim)
    assert m.shape == t.shape and m.dtype == torch.bool and is_valid_24(m, dim)
    a = t.abs().movedim(dim, -1).reshape(-1, 4).double()
    k = m.movedim(dim, -1).reshape(-1, 4)
    kept_min = torch.where(k, a, torch.full_like(a, math.inf)).min(-1).values
    dropped_max = torch.where(~k, a, torch.full_like(a, -math.inf)).max(-1).values
    assert (kept_min >= dropped_max).all()  # never keeps a smaller |w| over a larger one


@settings_
@given(t=tensors(max_dims=3))
def test_transposable_mask_fuzz(t):
    if not t.dtype.is_floating_point:
        err = TypeError
    elif t.dim() != 2 or t.numel() == 0 or any(s % 4 for s in t.shape) or torch.isnan(t).any():
        err = ValueError
    else:
        err = None
    if err is not None:
        with pytest.raises(err):
            transposable_mask_24(t)
        return
    m = transposable_mask_24(t)
    assert sparse_core.is_transposable_24(m)


@settings_
@given(t=tensors(), dim=st.integers(-3, 3))
def test_mvue_fuzz(t, dim):
    err = expected_failure(t, dim)
    if err is not None:
        with pytest.raises(err):
            mvue_24(t, dim)
        return
    out = mvue_24(t, dim)
    assert out.shape == t.shape and out.dtype == t.dtype
    groups_in = t.movedim(dim, -1).reshape(-1, 4).double()
    groups_out = out.movedim(dim, -1).reshape(-1, 4).double()
    finite = torch.isfinite(groups_in).all(-1) & (groups_in.abs().sum(-1) < 1e300)
    small = finite & (groups_in.abs().sum(-1) * 2 < torch.finfo(t.dtype).max)
    assert torch.isfinite(groups_out[small]).all()  # finite, representable input -> finite output
    assert ((groups_out[small] != 0).sum(-1) <= 2).all()
    assert (groups_out[small][groups_in[small] == 0] == 0).all()  # zeros stay zero
    assert (~torch.isfinite(groups_out[~finite]).any(-1) | (groups_in[~finite].abs().sum(-1) >= 1e300)).all() \
        or not (~finite).any()


@settings(max_examples=60, deadline=None)
@given(i=st.integers(-2, 13), o=st.integers(-2, 13), bias=st.booleans(),
       lead=st.lists(st.integers(0, 3), max_size=2), kind=st.sampled_from(["magnitude", "transposable", "x"]))
def test_sparse_linear_fuzz(i, o, bias, lead, kind):
    if i <= 0 or o <= 0 or i % 4 or o % 4 or kind == "x":
        with pytest.raises(ValueError):
            SparseLinear(i, o, bias=bias, mask_kind=kind, backend="reference")
        return
    layer = SparseLinear(i, o, bias=bias, mask_kind=kind, backend="reference")
    x = torch.randn(*lead, i, requires_grad=True)
    y = layer(x)
    assert y.shape == (*lead, o)
    ref = torch.nn.functional.linear(x, layer.weight * layer.mask, layer.bias)
    assert torch.allclose(y, ref, atol=1e-5)
    y.sum().backward()
    assert x.grad.shape == x.shape


@settings(max_examples=80, deadline=None)
@given(method=st.sampled_from(list(sparse_core.METHODS) + ["nope"]),
       key=st.sampled_from(["lambda_w", "mask_refresh_interval", "dense_ft_fraction", "mvue", "mask_kind",
                            "decay", "backend", "warmup_steps", "bogus"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2), st.just(float("nan")),
                       st.sampled_from(["auto", "gradient", "weight", "transposable", "", "x"])),
       total=st.one_of(st.none(), st.integers(-1, 50)))
def test_sparsify_options_fuzz(method, key, value, total):
    from tiny_models import TinyGPT

    try:
        ctl = sparse_core.sparsify(TinyGPT(layers=1), method=method, total_steps=total, **{key: value})
    except (ValueError, TypeError) as err:
        assert str(err)  # a message, naming the method, option or value
        return
    model = TinyGPT(layers=1)
    ctl = sparse_core.sparsify(model, method=method, total_steps=total, **{key: value})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl.bind_optimizer(opt)
    model(torch.randint(0, 32, (2, 8))).sum().backward()
    ctl.before_optimizer_step(0)
    opt.step()
    ctl.after_optimizer_step(0)  # accepted options give a working controller and finite weights
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for layer in ctl.layers.values():
        assert is_valid_24(layer.mask, dim=1)
