"""Helpers for the kernel tests: device choice, skips, fresh random inputs."""

import pytest
import torch

from sparse_core.kernels._triton import has_triton, interpreting

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
needs_kernels = pytest.mark.skipif(
    not has_triton() or not (ON_GPU or interpreting()), reason="needs triton on CUDA or TRITON_INTERPRET=1"
)
gpu = pytest.mark.skipif(not ON_GPU, reason="needs CUDA")


def rand(shape, dtype, kind="randn", seed=0, device=DEVICE):
    """Fresh inputs: 'randn', 'ties' (small integers, many exact ties and zero groups), 'zeros_mixed'."""
    g = torch.Generator().manual_seed(seed)
    if kind == "randn":
        x = torch.randn(shape, generator=g)
    elif kind == "ties":
        x = torch.randint(-3, 4, shape, generator=g).float()
    else:  # some all-zero groups of 4 in random rows
        x = torch.randn(shape, generator=g)
        x.view(-1, 4)[torch.rand(x.numel() // 4, generator=g) < 0.3] = 0
    return x.to(dtype).to(device)


def same_bytes(a: torch.Tensor, b: torch.Tensor, n: int) -> bool:
    """The first n 16-bit elements of two packed buffers are identical."""
    return torch.equal(a.reshape(-1)[:n].view(torch.int16).cpu(), b.reshape(-1)[:n].view(torch.int16).cpu())
