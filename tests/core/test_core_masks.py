"""Masks against brute force: magnitude 2:4 (tie rule) and the exact transposable mask (90 patterns)."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_core import is_transposable_24, is_valid_24, mask_24, transposable_mask_24
from sparse_core.masks import transposable_patterns


def brute_mask_24(w: torch.Tensor) -> torch.Tensor:
    """Per row-group of 4: keep the two largest |w|, lower index first among equals."""
    out = torch.zeros(w.shape, dtype=torch.bool)
    flat, res = w.reshape(-1, 4), out.view(-1, 4)
    for g in range(flat.shape[0]):
        order = sorted(range(4), key=lambda i: (-abs(float(flat[g, i])), i))
        res[g, order[:2]] = True
    return out


def brute_transposable(w: torch.Tensor) -> torch.Tensor:
    """Exhaustive search over the 90 patterns per 4x4 block; first best pattern wins."""
    table = transposable_patterns()
    out = torch.zeros(w.shape, dtype=torch.bool)
    for i in range(0, w.shape[0], 4):
        for j in range(0, w.shape[1], 4):
            block = w[i:i + 4, j:j + 4].abs().double()
            scores = [float((block * p).sum()) for p in table]
            out[i:i + 4, j:j + 4] = table[scores.index(max(scores))]
    return out


def test_pattern_table_is_all_90_doubly_2of4_patterns():
    table = transposable_patterns()
    assert table.shape == (90, 4, 4)
    assert (table.sum(1) == 2).all() and (table.sum(2) == 2).all()
    assert len({tuple(p.flatten().tolist()) for p in table}) == 90
    every = [p for p in itertools.product([0, 1], repeat=16)
             if all(sum(p[r * 4:r * 4 + 4]) == 2 for r in range(4)) and all(sum(p[c::4]) == 2 for c in range(4))]
    assert len(every) == 90


shapes = st.tuples(st.integers(1, 3), st.integers(1, 4)).map(lambda s: (s[0] * 2, s[1] * 4))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_mask_24_matches_brute_force(shape, seed, ties):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-3, 4, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    m = mask_24(w)
    assert is_valid_24(m)
    assert torch.equal(m, brute_mask_24(w))


@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_mask_24_along_any_dim(dim):
    w = torch.randn(8, 12, 16)
    m = mask_24(w, dim=dim)
    assert is_valid_24(m, dim=dim)
    assert torch.equal(m, brute_mask_24(w.movedim(dim, -1).contiguous()).movedim(-1, dim))


def test_mask_24_ties_go_to_lower_index():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 2.0, 1.0]])
    assert mask_24(w).tolist() == [[True, True, False, False, True, True, False, False, True, True, False, False]]


@settings(max_examples=25, deadline=None)
@given(rb=st.integers(1, 3), cb=st.integers(1, 3), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_transposable_mask_is_exact(rb, cb, seed, ties):
    g = torch.Generator().manual_seed(seed)
    shape = (4 * rb, 4 * cb)
    w = torch.randint(-2, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    m = transposable_mask_24(w)
    assert is_transposable_24(m)
    brute = brute_transposable(w)
    assert torch.equal(m, brute)  # same pattern, including the lowest-index tie rule
    assert float((w.abs() * m).sum()) == pytest.approx(float((w.abs() * brute).sum()))


def test_transposable_mask_keeps_at_least_greedy_row_mask_score_bound():
    w = torch.randn(64, 64)
    kept_t = float((w.abs() * transposable_mask_24(w)).sum())
    kept_row = float((w.abs() * mask_24(w)).sum())
    assert kept_t <= kept_row + 1e-4  # the row-wise mask is the unconstrained optimum
    assert kept_t > 0.9 * kept_row


def test_mask_24_all_zero_and_bf16():
    assert is_valid_24(mask_24(torch.zeros(4, 8)))
    w = torch.randn(8, 16)
    assert torch.equal(mask_24(w.bfloat16()), brute_mask_24(w.bfloat16().float()))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mask_24(torch.randn(3, 6)), "multiple of 4"),
        (lambda: mask_24(torch.ones(4, 8, dtype=torch.int64)), "floating dtype"),
        (lambda: mask_24([1.0, 2.0, 3.0, 4.0]), "torch.Tensor"),
        (lambda: mask_24(torch.randn(4, 8), dim=3), "out of range"),
        (lambda: mask_24(torch.tensor([1.0, float("nan"), 0.0, 1.0])), "NaN"),
        (lambda: transposable_mask_24(torch.randn(16)), "2-D"),
        (lambda: transposable_mask_24(torch.randn(4, 4, 4)), "2-D"),
        (lambda: transposable_mask_24(torch.randn(6, 8)), r"shape\[0\] = 6"),
        (lambda: transposable_mask_24(torch.randn(8, 10)), r"shape\[1\] = 10"),
        (lambda: is_valid_24(torch.ones(4)), "bool"),
    ],
)
def test_bad_input_is_refused_clearly(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_transposable_mask_keeps_an_infinite_entry_like_mask_24(sign):
    w = torch.ones(4, 4)
    w[1, 3] = sign * float("inf")
    m = transposable_mask_24(w)
    assert bool(m[1, 3]) and bool(mask_24(w)[1, 3]) and is_transposable_24(m)
