"""Session-wide test set-up, run before any test module imports sparse_core or triton."""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Triton kernels run under the interpreter on CPU machines (CI); it must be chosen before triton
    # compiles any @triton.jit function, i.e. before the first import of sparse_core.kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))  # shared test helpers (state_compare)

from deit._torchvision_compat import ensure_torchvision_importable  # noqa: E402

# CPU torch wheels have no matching torchvision build; transformers and timm import torchvision.
ensure_torchvision_importable()
