"""Let `import torchvision` (and so `import timm`) work when torchvision's C++ extension cannot load.

Why: the PyPI torchvision wheel that matches a CPU-only torch is a CUDA build; its `_C` library
needs libc10_cuda and fails to load beside the CPU torch. torchvision then still imports its pure
Python parts, except that `torchvision/_meta_registrations.py` calls
`torch.library.register_fake("torchvision::nms")` (and `::qnms`) unconditionally, which raises
"operator torchvision::nms does not exist" because the operator schema came from `_C`.

What: only when `_C` cannot be loaded, define those two schemas (the same signature `_C` defines)
so the fake-kernel registration succeeds. Nothing else changes: `torchvision.extension._has_ops()`
stays False, so every detection op (nms, roi_align, ...) still raises torchvision's own
"Couldn't load custom C++ ops" error if called, and the recipe never calls them. With a working
torchvision (e.g. a matching CUDA build on the GPU machine) this module does nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import torch

__all__ = ["ensure_torchvision_importable"]

_SCHEMAS = {  # the operators `_meta_registrations.py` registers fakes for via `register_fake`
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it would remove the schemas


def _extension_loads(package_dir: Path) -> bool:
    """Try to load torchvision's `_C` library the way torchvision does; True on success."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = package_dir / f"_C{suffix}"
        if path.exists():
            try:
                torch.ops.load_library(str(path))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> bool:
    """Define the missing `torchvision::` schemas if torchvision's `_C` cannot load; True if it did."""
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False  # not installed: `import timm` will say so itself
    if _extension_loads(Path(spec.origin).parent):
        return False
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, name):
            library.define(schema)
    _LIBRARY = library
    return True


ensure_torchvision_importable()
