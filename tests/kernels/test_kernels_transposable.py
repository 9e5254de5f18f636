"""transposable_compress: mask == masks.transposable_mask_24, both packed operands == torch twin and,
on CUDA, == torch._cslt_compress of W and W^T."""

import pytest
import torch

from sparse_core.kernels import packed_numel, torch_transposable_compress, transposable_compress
from sparse_core.masks import is_transposable_24, transposable_mask_24

from kernels_testutil import gpu, needs_kernels, rand, same_bytes


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
