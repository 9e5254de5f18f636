"""mvue_compress_t / mvue_24_t: the estimator's structure and values, reproducibility, int and tensor
seeds, the packed bytes, the law of the kept pair, unbiasedness by Monte Carlo (more draws on CUDA), and
fresh draws on every replay of a CUDA graph."""

import pytest
import torch

from sparse_core.kernels import mvue_24_t, mvue_compress_t, packed_numel, torch_mvue_compress_t, torch_pack_24
from sparse_core.mvue import inclusion_probabilities

from kernels_testutil import DEVICE, ON_GPU, gpu, needs_kernels, rand, same_bytes

# the interpreter evaluates the deliberate 0 / 0 of groups with < 2 non-zeros in numpy
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")


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
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens, out", [(64, 64), (128, 128), (256, 128), (512, 192), (192, 64)])
def test_sum_over_tokens_comes_with_the_same_operand(dtype, tokens, out):
    """return_sum: dy.sum(0) (the bias gradient) from the same pass, the packed operand unchanged."""
    dy = rand((tokens, out), dtype, "randn", seed=tokens + out)
    dy[:, 3] = 0.0  # an all-zero column sums to exactly 0
    packed, total = mvue_compress_t(dy, seed=11, return_sum=True)
    assert same_bytes(packed, mvue_compress_t(dy, seed=11), packed_numel(out, tokens))
    assert total.shape == (out,) and total.dtype == dtype and total[3] == 0
    ref = dy.double().sum(0)
    assert torch.allclose(total.double(), ref, rtol=2**-7, atol=1e-3 * tokens**0.5)


@needs_kernels
def test_seed_reproducible():
    dy = rand((64, 64), torch.bfloat16, seed=9)
    assert torch.equal(mvue_24_t(dy, 5), mvue_24_t(dy, 5))
    assert not torch.equal(mvue_24_t(dy, 5), mvue_24_t(dy, 6))
    with pytest.raises(ValueError, match="seed"):
        mvue_compress_t(dy, -1)


@needs_kernels
def test_tensor_seed_equals_int_seed():
    dy = rand((64, 128), torch.bfloat16, "zeros", seed=10)
    for value in (0, 5, 2**62 - 1):
        t = torch.tensor([value], dtype=torch.int64, device=DEVICE)
        assert torch.equal(mvue_24_t(dy, t), mvue_24_t(dy, value))
        assert same_bytes(mvue_compress_t(dy, t), mvue_compress_t(dy, value), packed_numel(128, 64))
    assert torch.equal(mvue_24_t(dy, torch.tensor(7, device=DEVICE)), mvue_24_t(dy, 7))  # 0-d works too
    t5, t6 = (torch.tensor([v], device=DEVICE) for v in (5, 6))
    assert not torch.equal(mvue_24_t(dy, t5), mvue_24_t(dy, t6))
    assert not same_bytes(mvue_compress_t(dy, t5), mvue_compress_t(dy, t6), packed_numel(128, 64))


@needs_kernels
@pytest.mark.parametrize("bad, match", [
    (lambda: torch.tensor([3], dtype=torch.int32, device=DEVICE), "int64"),
    (lambda: torch.tensor([3.0], device=DEVICE), "int64"),
    (lambda: torch.tensor([3, 4], device=DEVICE), "one element"),
    (lambda: torch.zeros(0, dtype=torch.int64, device=DEVICE), "one element"),
    (lambda: torch.tensor([3], device="meta"), "meta"),
    (lambda: 2**62, "seed"),
    (lambda: True, "seed"),
    (lambda: 1.5, "seed"),
])
def test_bad_seed_raises(bad, match):
    dy = rand((64, 64), torch.float16, seed=1)
    with pytest.raises(ValueError, match=match):
        mvue_compress_t(dy, bad())


def _pair_law(a):
    """Exact P({i, j}) of two draws without replacement prop. to a (float64), as a 4 x 4 upper matrix."""
    a = torch.tensor(a, dtype=torch.float64)
    s = a.sum()
    law = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            if i != j and a[i] > 0 and a[j] > 0:
                law[min(i, j), max(i, j)] += a[i] / s * a[j] / (s - a[i])
    return law


@needs_kernels
def test_kept_pair_has_the_exact_law():
    """Frequencies of the kept pair over many groups vs the law of successive sampling (chi-square)."""
    patterns = [[1.0, 2.0, 3.0, 4.0], [4.0, -0.5, 0.25, 1.0], [-1.0, 1.0, 1.0, -1.0], [3.0, 0.0, 1.0, 2.0]]
    dy = torch.empty(64, 64)  # tokens x out: group k of out feature n gets pattern (n + k) % 4
    for n in range(64):
        for k in range(16):
            dy[4 * k: 4 * k + 4, n] = torch.tensor(patterns[(n + k) % 4])
    dy = dy.to(torch.float16).to(DEVICE)
    which = torch.tensor([[(n + k) % 4 for k in range(16)] for n in range(64)])
    counts = torch.zeros(4, 4, 4, dtype=torch.float64)
    for s in range(8 if not ON_GPU else 64):
        kept = (mvue_24_t(dy, seed=77 + s).cpu().reshape(64, 16, 4) != 0)
        assert bool((kept.sum(-1) == 2).all())
        for p in range(4):
            kp = kept[which == p].double()  # (groups, 4)
            counts[p] += torch.einsum("gi,gj->ij", kp, kp).triu(1)
    for p, pat in enumerate(patterns):
        law = _pair_law([abs(v) for v in pat])
        n = counts[p].sum()
        assert bool((counts[p][law == 0] == 0).all())  # pairs with a zero entry are never drawn
        expect = n * law[law > 0]
        chi2 = ((counts[p][law > 0] - expect) ** 2 / expect).sum().item()
        assert chi2 < 30, (pat, chi2, counts[p])  # <= 5 degrees of freedom: P(chi2 > 30) < 2e-5


def _mc_check(dy, draws, sample=None):
    """Mean of `draws` estimates (sample(s) -> dense estimate, default mvue_24_t with seed 1000 + s) vs x,
    in units of the exact standard error sqrt(x^2 (1/pi - 1) / draws); pi in float64."""
    sample = sample or (lambda s: mvue_24_t(dy, seed=1000 + s))
    xt = dy.t().double().cpu()
    groups = xt.reshape(xt.shape[0], -1, 4)
    pi = inclusion_probabilities(groups.abs()).reshape(xt.shape)
    acc = torch.zeros_like(xt)
    for s in range(draws):
        acc += sample(s).double().cpu()
    mean = acc / draws
    se = (xt * xt * (1 / pi.clamp_min(1e-30) - 1).clamp_min(0) / draws).sqrt()
    err = mean - xt
    rounding = (2**-8 if dy.dtype == torch.bfloat16 else 2**-10) * xt.abs()  # 16-bit rounding of x / pi
    likely = pi > 0.2  # elements kept often enough for a per-element normal approximation
    assert bool((err.abs() <= rounding + 6 * se)[likely].all())
    total_z = err.sum() / se.pow(2).sum().sqrt()  # all elements together: one N(0, 1) draw
    assert abs(total_z.item()) < 5, total_z.item()
    assert bool((mean[xt == 0] == 0).all())


@needs_kernels
def test_unbiased_small():
    _mc_check(rand((64, 64), torch.float16, seed=3), draws=200 if ON_GPU else 40)


@needs_kernels
def test_unbiased_with_a_dominant_entry():
    """Groups whose small entries vanish next to the large one in float32 (S - a_0 == 0 if formed as a
    difference): the small ones are still kept with their true inclusion probabilities."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 64, generator=g)
    x.view(64, 16, 4)[:, ::2, 0] = 2.0 ** torch.randint(-2, 3, (64, 8), generator=g).float()
    x.view(64, 16, 4)[:, ::2, 1:] *= 2.0**-27  # bf16 keeps them; 1 + 3 * 2**-27 rounds to 1 in float32
    _mc_check(x.t().contiguous().to(torch.bfloat16).to(DEVICE), draws=200 if ON_GPU else 40)


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


@gpu
@pytest.mark.gpu
def test_cuda_graph_replays_draw_fresh_seeds():
    """Seed drawn by torch.randint inside the captured graph: every replay samples anew, and the mean over
    replays is unbiased."""
    dy = rand((256, 128), torch.float16, "zeros", seed=23)
    mvue_24_t(dy, torch.zeros(1, dtype=torch.int64, device="cuda"))  # autotune outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        seed = torch.randint(0, 2**62, (1,), device="cuda", dtype=torch.int64)
        out = mvue_24_t(dy, seed)
    graph.replay()
    first, first_seed = out.clone(), seed.clone()
    graph.replay()
    assert not torch.equal(first_seed, seed)
    assert not torch.equal(first, out)

    def sample(_):
        graph.replay()
        return out

    _mc_check(dy, draws=2000, sample=sample)
