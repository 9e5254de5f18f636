"""mvue_compress_t / mvue_24_t: the estimator's structure and values, reproducibility, the packed bytes,
and unbiasedness by Monte Carlo (more draws on CUDA)."""

import pytest
import torch

from sparse_core.kernels import mvue_24_t, mvue_compress_t, packed_numel, torch_mvue_compress_t, torch_pack_24
from sparse_core.mvue import inclusion_probabilities

from kernels_testutil import ON_GPU, gpu, needs_kernels, rand, same_bytes


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["randn", "zeros", "ties"])
def test_structure_values_and_bytes(dtype, kind):
    dy = rand((64, 64), dtype, kind, seed=4)  # tokens x out
    d = mvue_24_t(dy, seed=123).cpu()  # (out, tokens)
    xt = dy.t().float().cpu()
    g = d.float().reshape(64, -1, 4)
    assert bool(((g != 0).sum(-1) <= 2).all())
    assert bool(((g != 0) <= (xt.reshape(64, -1, 4) != 0)).all())  # keeps only non-zeros
    pi = inclusion_probabilities(xt.reshape(64, -1, 4).abs())
    expect = (xt.reshape(64, -1, 4) / torch.where(pi > 0, pi, 1)).to(dtype).float()
    rtol = 2**-7 if dtype == torch.bfloat16 else 2**-10  # one rounding step: pi's float32 summation order
    assert torch.allclose(torch.where(g != 0, expect, 0), g, rtol=rtol, atol=0)
    # exactly two kept wherever a group has >= 2 non-zeros
    nz = (xt.reshape(64, -1, 4) != 0).sum(-1)
    assert bool(((g != 0).sum(-1) == nz.clamp(max=2)).all())
    packed = mvue_compress_t(dy, seed=123)
    assert same_bytes(packed, torch_pack_24(d), packed_numel(64, 64))


@needs_kernels
def test_seed_reproducible():
    dy = rand((64, 64), torch.bfloat16, seed=9)
    assert torch.equal(mvue_24_t(dy, 5), mvue_24_t(dy, 5))
    assert not torch.equal(mvue_24_t(dy, 5), mvue_24_t(dy, 6))
    with pytest.raises(ValueError, match="seed"):
        mvue_compress_t(dy, -1)


def _mc_check(dy, draws):
    """Mean of `draws` estimates vs x, in units of the exact standard error sqrt(x^2 (1/pi - 1) / draws)."""
    xt = dy.t().double().cpu()
    groups = xt.reshape(xt.shape[0], -1, 4)
    pi = inclusion_probabilities(groups.abs()).reshape(xt.shape)
    acc = torch.zeros_like(xt)
    for s in range(draws):
        acc += mvue_24_t(dy, seed=1000 + s).double().cpu()
    mean = acc / draws
    se = (xt * xt * (1 / pi.clamp_min(1e-30) - 1).clamp_min(0) / draws).sqrt()
    err = mean - xt
    rounding = 2**-10 * xt.abs()  # float16 rounding of x / pi
    likely = pi > 0.2  # elements kept often enough for a per-element normal approximation
    assert bool((err.abs() <= rounding + 6 * se)[likely].all())
    total_z = err.sum() / se.pow(2).sum().sqrt()  # all elements together: one N(0, 1) draw
    assert abs(total_z.item()) < 5, total_z.item()
    assert bool((mean[xt == 0] == 0).all())


@needs_kernels
def test_unbiased_small():
    _mc_check(rand((64, 64), torch.float16, seed=3), draws=200 if ON_GPU else 40)


@gpu
@pytest.mark.gpu
def test_unbiased_gpu_and_cslt_bytes():
    dy = rand((256, 128), torch.float16, "zeros", seed=21)
    _mc_check(dy, draws=2000)
    big = rand((16384, 768), torch.bfloat16, seed=22)
    d = mvue_24_t(big, seed=7)
    assert same_bytes(mvue_compress_t(big, seed=7), torch._cslt_compress(d), packed_numel(768, 16384))
    twin = torch_mvue_compress_t(big[:64].cpu())  # the torch twin packs cslt's layout too
    assert twin.shape == torch._cslt_compress(d[:, :64].contiguous()).shape
