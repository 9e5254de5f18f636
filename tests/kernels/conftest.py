"""Kernel tests run on CUDA, or on the CPU through Triton's interpreter (TRITON_INTERPRET=1, switched on
by tests/conftest.py before anything imports triton)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for kernels_testutil
