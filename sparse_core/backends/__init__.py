"""Backend registry: 'reference' everywhere; fast GPU backends register themselves when importable.

`resolve_backend('auto', device)` picks the first available fast backend for the device and falls
back to 'reference'; forcing a name that cannot run on the device is a clear error.
"""

from __future__ import annotations

import torch

from sparse_core.backends.base import Backend, SparseOperands
from sparse_core.backends.reference import ReferenceBackend

__all__ = ["Backend", "SparseOperands", "BACKENDS", "register_backend", "resolve_backend", "available_backends"]

BACKENDS: dict[str, type[Backend]] = {}
_FAST_ORDER: list[str] = []  # preference order for 'auto'
_INSTANCES: dict[str, Backend] = {}
_RESOLVED: dict[tuple[str, torch.device], Backend] = {}  # availability is fixed for a process: resolve once


def register_backend(cls: type[Backend], fast: bool = False) -> type[Backend]:
    """Record a backend class under `cls.name`; fast ones are tried by 'auto' in registration order."""
    if not cls.name:
        raise ValueError(f"backend class {cls.__name__} has no name")
    BACKENDS[cls.name] = cls
    _RESOLVED.clear()
    if fast and cls.name not in _FAST_ORDER:
        _FAST_ORDER.append(cls.name)
    return cls


register_backend(ReferenceBackend)


def _instance(name: str) -> Backend:
    if name not in _INSTANCES:
        _INSTANCES[name] = BACKENDS[name]()
    return _INSTANCES[name]


def available_backends(device: torch.device | str) -> dict[str, str | None]:
    """Each registered backend with None if it runs on `device`, else the reason it does not."""
    device = torch.device(device)
    return {name: cls.unavailable_reason(device) for name, cls in BACKENDS.items()}


def resolve_backend(name: str, device: torch.device | str) -> Backend:
    """The backend called `name` ('auto' = fastest available) for tensors on `device` (cached: every
    SparseLinear forward asks)."""
    device = torch.device(device)
    key = (name, device)
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(name, device)
    return _RESOLVED[key]


def _resolve(name: str, device: torch.device) -> Backend:
    if name == "auto":
        for fast in _FAST_ORDER:
            if BACKENDS[fast].unavailable_reason(device) is None:
                return _instance(fast)
        return _instance("reference")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(BACKENDS)} or 'auto'")
    reason = BACKENDS[name].unavailable_reason(device)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot run on {device}: {reason}")
    return _instance(name)

from sparse_core.backends import cusparselt as _cusparselt  # noqa: E402,F401  registers 'cusparselt*'; imports without CUDA
