"""sparse_core: 2:4-sparse training of transformers (masks, MVUE, SparseLinear, methods, controller)."""

from sparse_core.controller import SparseController
from sparse_core.linear import SparseLinear
from sparse_core.masks import is_transposable_24, is_valid_24, mask_24, transposable_mask_24
from sparse_core.methods import METHODS, ffn_hidden_dim
from sparse_core.mvue import mvue_24
from sparse_core.surgery import DEFAULT_FFN_PATTERNS, densify, export_semi_structured, sparsify

__version__ = "0.1.0"

__all__ = [
    "mask_24",
    "transposable_mask_24",
    "is_valid_24",
    "is_transposable_24",
    "mvue_24",
    "SparseLinear",
    "SparseController",
    "METHODS",
    "ffn_hidden_dim",
    "sparsify",
    "densify",
    "export_semi_structured",
    "DEFAULT_FFN_PATTERNS",
]
