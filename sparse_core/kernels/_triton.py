"""Optional Triton: `has_triton()` says whether kernels can launch; nothing here imports triton eagerly."""

from __future__ import annotations

import os
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def has_triton() -> bool:
    """True when triton imports (its kernels then run on CUDA, or on CPU under TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def can_launch(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can run on tensor `t`: CUDA with triton, or any tensor when interpreting."""
    if not has_triton():
        return False
    return t.is_cuda or (interpreting() and t.device.type == "cpu")


def require_launch(t: torch.Tensor, op: str) -> None:
    """Raise a clear error when `op` cannot launch its Triton kernel on `t`."""
    if not has_triton():
        raise RuntimeError(f"{op} needs triton, which is not installed; use the torch_* reference twin")
    if not can_launch(t):
        raise ValueError(
            f"{op} runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got a tensor on {t.device}"
        )
