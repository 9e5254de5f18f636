"""Registry of sparse-training methods: `METHODS` maps each name to a one-line description."""

from sparse_core.methods import bimask, s_ste, simple, step  # noqa: F401  (registers the methods)
from sparse_core.methods.base import METHOD_CLASSES, SparseMethod, build_method, register_method

_ORDER = ("dense", "half", "ste", "sr-ste", "2by4", "step", "bi-mask", "s-ste")
METHODS: dict[str, str] = {
    name: METHOD_CLASSES[name].description
    for name in sorted(METHOD_CLASSES, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))
}


def ffn_hidden_dim(hidden: int, method: str) -> int:
    """FFN width to build for `method`: half of `hidden` for 'half' (rounded to a multiple of 4)."""
    if method not in METHOD_CLASSES:
        raise ValueError(f"unknown sparse method {method!r}; known: {sorted(METHOD_CLASSES)}")
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
    if method == "half":
        return max(4, (hidden // 2) // 4 * 4)
    return hidden


__all__ = ["METHODS", "METHOD_CLASSES", "SparseMethod", "build_method", "register_method", "ffn_hidden_dim"]
