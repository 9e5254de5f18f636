"""SparseLinear.compute_mask dispatch for transposable masks: the Triton kernel for CUDA weights it
accepts, the torch rule (masks.transposable_mask_24) otherwise or under SPARSE_CORE_MASK_KERNEL=0."""

import pytest
import torch

from sparse_core import SparseLinear, is_transposable_24, transposable_mask_24
from sparse_core.kernels.transposable import accepts_mask_weight
from sparse_core.linear import _use_mask_kernel

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpu_weights_use_the_torch_rule(dtype):
    layer = SparseLinear(192, 128, dtype=dtype, mask_kind="transposable", backend="reference")
    assert not _use_mask_kernel(layer.weight)
    assert torch.equal(layer.mask, transposable_mask_24(layer.weight))
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight))
    layer.refresh_mask()
    assert torch.equal(layer.mask, transposable_mask_24(layer.weight))
    assert is_transposable_24(layer.mask)


def test_accepted_weights():
    assert accepts_mask_weight(torch.zeros(64, 128))
    assert accepts_mask_weight(torch.zeros(128, 64, dtype=torch.bfloat16))
    assert accepts_mask_weight(torch.zeros(64, 64, dtype=torch.float16))
    assert not accepts_mask_weight(torch.zeros(64, 64, dtype=torch.float64))
    assert not accepts_mask_weight(torch.zeros(64, 96))
    assert not accepts_mask_weight(torch.zeros(96, 64))
    assert not accepts_mask_weight(torch.zeros(64, 64, 64))
    assert not accepts_mask_weight(torch.zeros(128, 64).t())  # not contiguous


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_weights_use_the_kernel(dtype, monkeypatch):
    layer = SparseLinear(768, 3072, device="cuda", dtype=dtype, mask_kind="transposable")
    assert _use_mask_kernel(layer.weight)
    assert not _use_mask_kernel(layer.weight.t())  # not contiguous
    with torch.no_grad():  # integer weights: exact fp32 block sums, so kernel == torch rule
        layer.weight.copy_(torch.randint(-8, 9, layer.weight.shape, device="cuda"))
    layer.refresh_mask()
    assert torch.equal(layer.mask, transposable_mask_24(layer.weight))
    monkeypatch.setenv("SPARSE_CORE_MASK_KERNEL", "0")
    assert not _use_mask_kernel(layer.weight)
    assert layer.refresh_mask() == 0


@gpu
@pytest.mark.gpu
def test_cuda_weights_of_other_shapes_use_the_torch_rule():
    layer = SparseLinear(96, 64, device="cuda", mask_kind="transposable")
    assert not _use_mask_kernel(layer.weight)
    assert torch.equal(layer.mask, transposable_mask_24(layer.weight))
