"""DeiT recipe: timm Vision Transformers trained the DeiT way with 2:4-sparse FFNs (sparse_core)."""

import deit._torchvision_compat  # noqa: F401  (lets torchvision/timm import beside a CPU-only torch)
