"""mvue_24: unbiased (Monte Carlo within a statistical bound), 2:4, zero groups stay zero, finite."""

import pytest
import torch

from sparse_core import mvue_24
from sparse_core.mvue import inclusion_probabilities


def test_unbiased_by_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g) * torch.rand(64, 16, generator=g) ** 3  # uneven magnitudes
    x[0, :4] = 0
    x[1, :3] = 0  # one non-zero in the group
    x[2, 4:8] = torch.tensor([5.0, 0.0, 0.0, 1e-3])
    n = 4000
    xd = x.double()
    mean = torch.stack([mvue_24(xd, generator=g) for _ in range(n)]).mean(0)
    # Var(out_i) = x_i^2 (1/pi_i - 1) for a Horvitz-Thompson estimate; 5 sigma of the mean of n draws
    pi = inclusion_probabilities(xd.abs().reshape(64, 4, 4)).reshape(64, 16)
    var = torch.where(pi > 0, xd**2 * (1 / pi.clamp_min(1e-300) - 1), torch.zeros_like(xd))
    bound = 5 * (var / n).sqrt() + 1e-12
    bad = (mean - xd).abs() > bound
    assert not bad.any(), (bad.nonzero()[:5], xd[bad][:5], mean[bad][:5], pi[bad][:5])


def test_structure_zero_groups_and_seed():
    x = torch.randn(32, 64)
    x[:, 8:12] = 0
    out = mvue_24(x, generator=torch.Generator().manual_seed(1))
    groups = (out != 0).reshape(32, 16, 4).sum(-1)
    assert (groups <= 2).all()
    assert (out[:, 8:12] == 0).all()
    assert torch.isfinite(out).all()
    same = mvue_24(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, same)
    # kept values are x / pi with pi <= 1, so magnitudes never shrink
    kept = out != 0
    assert (out[kept].abs() >= x[kept].abs() - 1e-6).all()
    assert (torch.sign(out[kept]) == torch.sign(x[kept])).all()


def test_inclusion_probabilities_match_frequencies():
    a = torch.tensor([[4.0, 2.0, 1.0, 1.0], [1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 2.0]])
    pi = inclusion_probabilities(a)
    assert torch.allclose(pi[:2].sum(-1), torch.tensor(2.0))  # two distinct indices drawn
    assert torch.allclose(pi[2], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    g = torch.Generator().manual_seed(3)
    x = a.repeat(20000, 1)
    kept = (mvue_24(x, generator=g) != 0).double().reshape(20000, 3, 4).mean(0)
    assert torch.allclose(kept, pi.double(), atol=0.015)


def test_dominant_entry_keeps_small_values_unbiased():
    """One entry 2**27 times the others (float32): S - a_big must not round to 0, or the small entries'
    inclusion probabilities collapse to p_i and their kept values blow up to the big entry's size."""
    a = torch.tensor([[2.0**27, 1.0, 1.0, 1.0]])
    pi = inclusion_probabilities(a)
    assert torch.allclose(pi, torch.tensor([[1.0, 1 / 3, 1 / 3, 1 / 3]]), rtol=1e-5)
    x = torch.tensor([2.0**27, 1.0, -1.0, 1.0]).repeat(4000, 1)
    out = mvue_24(x, generator=torch.Generator().manual_seed(4))
    assert out[:, 1:].abs().max() <= 3.0 + 1e-4  # kept small values are 1 / (1/3)
    assert (out[:, 1:].double().mean(0) - x[0, 1:].double()).abs().max() < 0.15


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_large_values_stay_finite(dtype):
    x = (torch.randn(16, 32) * 1e4).to(dtype)
    out = mvue_24(x, dim=0)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_non_finite_input_stays_visible():
    x = torch.randn(4, 8)
    x[0, 1] = float("inf")
    assert not torch.isfinite(mvue_24(x)[0, :4]).all()


@pytest.mark.parametrize("bad, match", [(torch.randn(4, 6), "multiple of 4"),
                                        (torch.ones(4, 4, dtype=torch.int32), "floating dtype")])
def test_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mvue_24(bad)
