"""transposable_compress: mask == masks.transposable_mask_24, both packed operands == torch twin and,
on CUDA, == torch._cslt_compress of W and W^T. transposable_mask: == transposable_mask_24 on inputs whose
fp32 block sums are exact, in float32/bfloat16/float16; valid and optimal up to rounding otherwise.
The refresh_* forms rewrite the previous mask in place and count the entries that changed."""

import pytest
import torch

from sparse_core.kernels import (
    packed_numel,
    refresh_transposable_compress,
    refresh_transposable_mask,
    torch_refresh_transposable_compress,
    torch_refresh_transposable_mask,
    torch_transposable_compress,
    torch_transposable_mask,
    transposable_compress,
    transposable_mask,
)
from sparse_core.masks import is_transposable_24, transposable_mask_24, transposable_patterns

from kernels_testutil import DEVICE, gpu, needs_kernels, rand, same_bytes


@needs_kernels
@pytest.mark.parametrize("shape", [(64, 64), (64, 128), (128, 64), (128, 192)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["randn", "ties", "zeros"])
def test_transposable_matches_reference(shape, dtype, kind):
    w = rand(shape, dtype, kind, seed=sum(shape))
    pw, pwt, mask = transposable_compress(w)
    rw, rwt, rmask = torch_transposable_compress(w.cpu())
    assert torch.equal(mask.cpu(), rmask)
    assert is_transposable_24(mask.cpu())
    assert same_bytes(pw, rw, packed_numel(*shape))
    assert same_bytes(pwt, rwt, packed_numel(shape[1], shape[0]))


@needs_kernels
def test_transposable_bad_shape():
    with pytest.raises(ValueError, match="64"):
        transposable_compress(rand((64, 96), torch.bfloat16))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_given_mask_packs_w_and_wt_under_it(dtype):
    """The fp32 master-weight path: the mask of the fp32 weight, the 16-bit cast packed under it."""
    w32 = rand((128, 192), torch.float32, "randn", seed=5)
    mask = transposable_mask_24(w32.cpu()).to(w32.device)
    w = w32.to(dtype)
    pw, pwt, out_mask = transposable_compress(w, mask)
    assert out_mask is mask
    masked = torch.where(mask, w, 0).cpu()
    rw, rwt = torch_transposable_compress(masked)[:2]  # the masked matrix's own mask keeps the same entries
    assert same_bytes(pw, rw, packed_numel(128, 192))
    assert same_bytes(pwt, rwt, packed_numel(192, 128))


@needs_kernels
@pytest.mark.parametrize("make, error, match", [
    (lambda d: torch.ones(64, 64, dtype=torch.uint8, device=d), TypeError, "bool tensor, got torch.uint8"),
    (lambda d: torch.ones(64, 128, dtype=torch.bool, device=d), ValueError, r"\(64, 64\) bool tensor"),
    (lambda d: torch.ones(64, 128, dtype=torch.bool, device=d)[:, ::2], ValueError, "contiguous=False"),
])
def test_given_mask_is_checked(make, error, match):
    w = rand((64, 64), torch.bfloat16, "randn", seed=1)
    with pytest.raises(error, match=match):
        transposable_compress(w, make(w.device))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(768, 3072), (3072, 768), (1024, 4096), (4096, 4096)])
@pytest.mark.parametrize("kind", ["randn", "ties"])
def test_transposable_against_cslt(shape, kind):
    w = rand(shape, torch.bfloat16, kind, seed=shape[0])
    pw, pwt, mask = transposable_compress(w)
    assert torch.equal(mask.cpu(), transposable_mask_24(w.cpu()))
    masked = torch.where(mask, w, 0)
    assert same_bytes(pw, torch._cslt_compress(masked), packed_numel(*shape))
    assert same_bytes(pwt, torch._cslt_compress(masked.t().contiguous()), packed_numel(shape[1], shape[0]))


# ---- transposable_mask: the mask alone, float32 / bfloat16 / float16 -------------------------------
MASK_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def exact_input(shape, dtype, kind, seed, device=DEVICE):
    """Inputs whose fp32 block sums are exact in every dtype: 'dyadic' (k/8, |k| <= 64), 'ties' (small
    integers), 'zero_blocks' (dyadic with ~30% of the aligned 4x4 blocks all zero, one all-zero row)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(-3, 4, shape, generator=g).float()
    else:
        x = torch.randint(-64, 65, shape, generator=g).float() / 8
    if kind == "zero_blocks":
        blocks = x.view(shape[0] // 4, 4, shape[1] // 4, 4)
        blocks.masked_fill_((torch.rand(shape[0] // 4, 1, shape[1] // 4, 1, generator=g) < 0.3), 0.0)
        x[1] = 0.0
    return x.to(dtype).to(device)


def block_kept_magnitude(w, mask):
    """float64 sum of |w| kept by `mask` in each aligned 4x4 block."""
    a = w.double().abs().cpu() * mask.cpu()
    return a.reshape(w.shape[0] // 4, 4, w.shape[1] // 4, 4).sum((1, 3))


@needs_kernels
@pytest.mark.parametrize("shape", [(64, 64), (128, 192), (192, 128)])
@pytest.mark.parametrize("dtype", MASK_DTYPES)
@pytest.mark.parametrize("kind", ["dyadic", "ties", "zero_blocks"])
def test_mask_equals_torch_rule_on_exact_inputs(shape, dtype, kind):
    w = exact_input(shape, dtype, kind, seed=shape[0] + shape[1])
    mask = transposable_mask(w)
    assert mask.dtype == torch.bool and mask.shape == shape and mask.device == w.device
    assert torch.equal(mask.cpu(), transposable_mask_24(w.cpu()))


@needs_kernels
def test_float32_scores_keep_every_significant_bit():
    """float32 magnitudes with up to 20 significant bits (integers < 2**20: every block sum exact in fp32) give the
    torch rule's mask: the three tf32 parts of the float32 scoring lose nothing (tf32 alone keeps 11 bits)."""
    g = torch.Generator().manual_seed(7)
    w = torch.randint(-(2**20) + 1, 2**20, (128, 192), generator=g).float()
    w += torch.where(w > 0, 1.0, -1.0) * 2**19 * (torch.rand(w.shape, generator=g) < 0.5)  # many full-width ones
    w = w.clamp(-(2**20) + 1, 2**20 - 1)
    assert torch.equal(transposable_mask(w.to(DEVICE)).cpu(), transposable_mask_24(w))


@needs_kernels
def test_mask_all_zero_weight_takes_pattern_zero():
    mask = transposable_mask(torch.zeros(64, 128, device=DEVICE))
    first = transposable_patterns()[0]
    assert torch.equal(mask.cpu(), first.repeat(16, 32))


@needs_kernels
@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_mask_valid_and_optimal_on_random_inputs(dtype):
    w = (torch.randn(128, 192, generator=torch.Generator().manual_seed(3)) * 10).to(dtype).to(DEVICE)
    mask = transposable_mask(w)
    assert is_transposable_24(mask.cpu())
    # where it differs from the float64 rule, only by fp32 rounding of near-equal pattern sums
    got, best = block_kept_magnitude(w, mask), block_kept_magnitude(w, transposable_mask_24(w.cpu()))
    assert torch.all(got >= best * (1 - 1e-6))


@needs_kernels
def test_mask_valid_with_infinite_weights():
    w = exact_input((64, 128), torch.float32, "dyadic", seed=5)
    w[0, 0], w[9, 70], w[10, 71] = float("inf"), float("-inf"), float("inf")
    assert is_transposable_24(transposable_mask(w).cpu())


@needs_kernels
def test_mask_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\(64, 96\)"):
        transposable_mask(torch.zeros(64, 96, device=DEVICE))
    with pytest.raises(ValueError, match=r"\(64, 96\)"):
        torch_transposable_mask(torch.zeros(64, 96))  # the twin takes the same inputs
    with pytest.raises(ValueError, match=r"\(64, 64, 64\)"):
        transposable_mask(torch.zeros(64, 64, 64, device=DEVICE))
    with pytest.raises(TypeError, match="float64"):
        transposable_mask(torch.zeros(64, 64, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="contiguous"):
        transposable_mask(torch.zeros(128, 64, device=DEVICE).t())
    with pytest.raises(TypeError, match="ndarray"):
        transposable_mask(torch.zeros(64, 64).numpy())
    w = torch.zeros(64, 64, device=DEVICE)
    w[5, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        transposable_mask(w)
    assert is_transposable_24(transposable_mask(w, check_nan=False).cpu())  # unchecked: NaN counts as 0


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(768, 3072), (3072, 768), (4096, 16384)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["dyadic", "ties"])
def test_mask_equals_torch_rule_on_gpu(shape, dtype, kind):
    w = exact_input(shape, dtype, kind, seed=shape[0])
    assert torch.equal(transposable_mask(w), transposable_mask_24(w))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(768, 3072), (4096, 16384)])
def test_mask_float32_random_on_gpu(shape):
    w = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(1)) * 0.02
    mask = transposable_mask(w)
    assert is_transposable_24(mask)
    got, best = block_kept_magnitude(w, mask), block_kept_magnitude(w, transposable_mask_24(w))
    assert torch.all(got >= best * (1 - 1e-6))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_tuning_config_gives_the_same_mask(dtype):
    """DDP ranks autotune the mask kernel on their own and must still agree on every mask (nanogpt does
    not broadcast masks): each (tile rows, warps) configuration gives the same bits on random weights."""
    from sparse_core.kernels.transposable import _MASK_TILE_ROWS, _MASK_WARPS, _mask_kernel, _pattern_operands

    w = (torch.randn(1024, 4096, device="cuda", generator=torch.Generator("cuda").manual_seed(2)) * 0.02).to(dtype)
    pats, codes = _pattern_operands(str(w.device))
    precision = "split" if dtype == torch.float32 else "tf32"
    masks = []
    for br in _MASK_TILE_ROWS:
        for warps in _MASK_WARPS:
            mask = torch.empty(w.shape, dtype=torch.bool, device="cuda")
            nan = torch.zeros(1, dtype=torch.int32, device="cuda")
            _mask_kernel[(w.shape[0] // br, w.shape[1] // 64)](w, pats, codes, mask.view(torch.uint8), nan, nan,
                                                               w.shape[1], BR=br, PRECISION=precision, FLIPS=False,
                                                               num_warps=warps)
            masks.append(mask)
    assert all(torch.equal(m, masks[0]) for m in masks[1:])
    assert torch.equal(transposable_mask(w), masks[0])


def _moved(w: torch.Tensor, seed: int) -> torch.Tensor:
    """w after an update that moves some entries across its mask (a training step's change)."""
    g = torch.Generator().manual_seed(seed)
    return (w.float().cpu() + 0.5 * torch.randn(w.shape, generator=g)).to(w.dtype).to(w.device)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_refresh_compress_rewrites_the_mask_and_counts_flips(dtype):
    """One launch = transposable_compress(w) + the flip count against the previous mask + the mask overwritten."""
    w0 = rand((128, 192), dtype, "randn", seed=11)
    mask = transposable_compress(w0)[2]
    w = _moved(w0, 12)
    old, version = mask.clone(), mask._version
    pw, pwt, flips = refresh_transposable_compress(w, mask)
    rw, rwt, rmask = torch_transposable_compress(w.cpu())
    assert torch.equal(mask.cpu(), rmask) and mask._version > version  # in place, recorded like an in-place op
    assert flips.dtype == torch.int64 and flips.dim() == 0 and flips.device == w.device
    assert 0 < int(flips) == int((rmask != old.cpu()).sum())
    assert same_bytes(pw, rw, packed_numel(128, 192)) and same_bytes(pwt, rwt, packed_numel(192, 128))
    twin_mask = old.cpu()
    twin = torch_refresh_transposable_compress(w.cpu(), twin_mask)
    assert torch.equal(twin_mask, rmask) and int(twin[2]) == int(flips)
    assert int(refresh_transposable_compress(w, mask)[2]) == 0  # the same weight again: nothing flips


@needs_kernels
@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_refresh_mask_rewrites_the_mask_and_counts_flips(dtype):
    w0 = exact_input((128, 192), dtype, "dyadic", seed=3)
    mask = transposable_mask(w0)
    w = exact_input((128, 192), dtype, "dyadic", seed=4)
    old = mask.clone()
    flips = refresh_transposable_mask(w, mask)
    expected = transposable_mask_24(w.cpu())
    assert torch.equal(mask.cpu(), expected)
    assert 0 < int(flips) == int((expected != old.cpu()).sum())
    twin_mask = old.cpu()
    assert int(torch_refresh_transposable_mask(w.cpu(), twin_mask)) == int(flips)
    assert torch.equal(twin_mask, expected)


@needs_kernels
def test_refresh_checks_the_previous_mask():
    w = rand((64, 64), torch.bfloat16, "randn", seed=1)
    with pytest.raises(ValueError, match=r"\(64, 64\) bool tensor"):
        refresh_transposable_compress(w, torch.ones(64, 128, dtype=torch.bool, device=w.device))
    with pytest.raises(TypeError, match="bool tensor, got torch.uint8"):
        refresh_transposable_mask(w, torch.ones(64, 64, dtype=torch.uint8, device=w.device))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_refresh_flip_count_on_gpu(dtype):
    """At a training shape (every tile's atomic add), the in-kernel flip count equals the torch count."""
    w0 = (torch.randn(4096, 1024, device="cuda", generator=torch.Generator("cuda").manual_seed(5)) * 0.02).to(dtype)
    w = w0 + (0.004 * torch.randn(w0.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(6))).to(dtype)
    mask = transposable_mask(w0)
    old = mask.clone()
    if dtype == torch.float32:
        flips = refresh_transposable_mask(w, mask)
    else:
        flips = refresh_transposable_compress(w, mask)[2]
    assert torch.equal(mask, transposable_mask(w))
    assert int(flips) == int((mask != old).sum()) > 0
