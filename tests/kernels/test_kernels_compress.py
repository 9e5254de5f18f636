"""compress_24 (given mask, fused magnitude mask; both orientations) against its torch twin, and on
CUDA against torch._cslt_compress byte for byte and through torch._cslt_sparse_mm."""

import pytest
import torch

from sparse_core.kernels import compress_24, packed_numel, torch_compress_24, torch_pack_24
from sparse_core.masks import mask_24

from kernels_testutil import DEVICE, gpu, needs_kernels, rand, same_bytes

SMALL = [(64, 64), (64, 192), (128, 128), (64, 384), (64, 256)]  # A tiles of 64, 128, 256 columns
DTYPES = [torch.bfloat16, torch.float16]


def random_mask(shape, seed, dim=1):
    """A random (not magnitude) 2:4 mask along `dim`."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(shape, generator=g).movedim(dim, -1)
    idx = m.reshape(-1, 4).topk(2, 1).indices
    keep = torch.zeros(m.numel() // 4, 4, dtype=torch.bool).scatter_(1, idx, True).reshape(m.shape)
    return keep.movedim(-1, dim).contiguous().to(DEVICE)


@needs_kernels
@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["randn", "ties", "zeros"])
@pytest.mark.parametrize("transpose", [False, True])
def test_magnitude_fused(shape, dtype, kind, transpose):
    rows, cols = shape
    x = rand((cols, rows) if transpose else shape, dtype, kind, seed=rows + cols)
    packed, mask = compress_24(x, transpose=transpose, return_mask=True)
    ref_packed, ref_mask = torch_compress_24(x.cpu(), transpose=transpose, return_mask=True)
    assert torch.equal(mask.cpu(), ref_mask)
    assert torch.equal(mask.cpu(), mask_24(x.cpu(), dim=0 if transpose else 1))
    assert same_bytes(packed, ref_packed, packed_numel(rows, cols))


@needs_kernels
@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_given_mask(shape, dtype, transpose):
    rows, cols = shape
    dshape = (cols, rows) if transpose else shape
    x = rand(dshape, dtype, "zeros", seed=7)
    m = random_mask(dshape, seed=3, dim=0 if transpose else 1)
    packed = compress_24(x, m, transpose=transpose)
    assert same_bytes(packed, torch_compress_24(x.cpu(), m.cpu(), transpose=transpose), packed_numel(rows, cols))


@needs_kernels
def test_strided_input():
    base = rand((64, 256), torch.bfloat16, seed=5)
    x = base[:, 64:192]  # non-contiguous view
    assert same_bytes(compress_24(x), torch_compress_24(x.cpu().contiguous()), packed_numel(64, 128))


@needs_kernels
def test_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        compress_24(rand((48, 64), torch.bfloat16))
    with pytest.raises(ValueError, match="columns"):
        compress_24(rand((48, 64), torch.bfloat16), transpose=True)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        compress_24(torch.randn(64, 64, device=DEVICE))
    with pytest.raises(TypeError, match="bool"):
        compress_24(rand((64, 64), torch.bfloat16), torch.ones(64, 64, device=DEVICE))


# ---- CUDA only: against cuSPARSELt itself -------------------------------------------------------
GPU_SHAPES = [(64, 64), (64, 128), (128, 192), (768, 3072), (3072, 768), (1024, 4096), (4096, 1024)]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["randn", "ties", "zeros"])
def test_bytes_equal_cslt_compress(shape, dtype, kind):
    rows, cols = shape
    x = rand(shape, dtype, kind, seed=rows * 7 + cols)
    packed, mask = compress_24(x, return_mask=True)
    assert torch.equal(mask.cpu(), mask_24(x.cpu(), dim=1))
    masked = torch.where(mask, x, torch.zeros((), dtype=dtype, device=x.device))
    ref = torch._cslt_compress(masked)
    assert packed.shape == ref.shape
    n = packed_numel(rows, cols)
    assert same_bytes(packed, ref, n), f"differs in {(packed.reshape(-1)[:n].view(torch.int16) != ref.reshape(-1)[:n].view(torch.int16)).sum().item()} of {n}"
    assert same_bytes(torch_pack_24(masked), ref, n)
    xt = rand((cols, rows), dtype, kind, seed=rows + 11 * cols)  # transposed orientation
    pt, mt = compress_24(xt, transpose=True, return_mask=True)
    assert same_bytes(pt, torch._cslt_compress(torch.where(mt, xt, 0).t().contiguous()), n)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(768, 3072), (4096, 1024)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_on_our_operand(shape, dtype):
    rows, cols = shape
    x = rand(shape, dtype, seed=1)
    packed, mask = compress_24(x, return_mask=True)
    masked = torch.where(mask, x, 0)
    b = rand((cols, 256), dtype, seed=2)
    ours = torch._cslt_sparse_mm(packed, b)
    theirs = torch._cslt_sparse_mm(torch._cslt_compress(masked), b)
    assert torch.equal(ours, theirs)
    ref = masked.double() @ b.double()
    assert ((ours.double() - ref).norm() / ref.norm()).item() < 1e-2
