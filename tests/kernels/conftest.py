"""Kernel tests run on CUDA, or on the CPU through Triton's interpreter (TRITON_INTERPRET=1).

Without CUDA the interpreter is switched on here; kernel modules imported earlier in JIT mode (by other
test folders) are reloaded so their kernels are re-created as interpreted functions.
"""

import importlib
import os
import sys

import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    os.environ["TRITON_INTERPRET"] = "1"
    for name in ("_pack", "compress", "mvue", "transposable", "masked_decay", "gated"):
        mod = sys.modules.get(f"sparse_core.kernels.{name}")
        if mod is not None:
            importlib.reload(mod)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for kernels_testutil
