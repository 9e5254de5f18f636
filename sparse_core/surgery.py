"""Model surgery: swap FFN nn.Linear modules for SparseLinear (`sparsify`), bake masks back into
plain nn.Linear (`densify`), and export for inference with PyTorch's semi-structured sparse tensors."""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from sparse_core.controller import SparseController
from sparse_core.linear import SparseLinear
from sparse_core.methods import build_method

__all__ = ["DEFAULT_FFN_PATTERNS", "sparsify", "densify", "export_semi_structured", "find_linears"]

# Full-match regexes on module names: the FFN linears of GPT-2 (nanoGPT names), BERT (HF names), ViT
# (timm Mlp/GluMlp/SwiGLU), LLaMA-style gated MLPs, and modules named ffn / feed_forward.
DEFAULT_FFN_PATTERNS: tuple[str, ...] = (
    r"(.*\.)?mlp\.(c_fc|c_proj|fc1|fc2|fc1_g|fc1_x|gate_proj|up_proj|down_proj|w1|w2|w3|fc_in|fc_out)",
    r"(.*\.)?(ffn|feed_forward)\.[^.]+",
    r"(.*\.)?intermediate\.dense",
    r"(.*\.)?layer\.\d+\.output\.dense",
)

Filter = Callable[[nn.Module, str], bool]


def _matcher(include: str | Iterable[str] | Filter | None) -> Filter:
    if callable(include):
        return include
    patterns = DEFAULT_FFN_PATTERNS if include is None else ([include] if isinstance(include, str) else list(include))
    compiled = [re.compile(p) for p in patterns]
    return lambda module, fqn: any(p.fullmatch(fqn) for p in compiled)


def find_linears(model: nn.Module, include: str | Iterable[str] | Filter | None = None) -> dict[str, nn.Linear]:
    """The nn.Linear modules of `model` whose names match `include` (default: FFN linears)."""
    match = _matcher(include)
    return {fqn: m for fqn, m in model.named_modules() if isinstance(m, nn.Linear) and match(m, fqn)}


def _set_submodule(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def sparsify(
    model: nn.Module,
    method: str = "2by4",
    include: str | Iterable[str] | Filter | None = None,
    total_steps: int | None = None,
    **options: Any,
) -> SparseController:
    """Swap the matching nn.Linear modules of `model` for SparseLinear in place; return the controller.

    `include`: regexes fully matching module names, or `filter_fn(module, fqn) -> bool`; the default
    matches the FFN linears of common transformer blocks. `options` are the method's options.
    """
    spec = build_method(method, **options)
    spec.validate(total_steps)
    layers: dict[str, SparseLinear] = {}
    if spec.swaps_layers:
        found = find_linears(model, include)
        if not found:
            raise ValueError(f"sparsify: no nn.Linear matched include={include!r} in {type(model).__name__}")
        for fqn, linear in found.items():
            if isinstance(linear, SparseLinear):
                raise ValueError(f"sparsify: {fqn} is already a SparseLinear")
            try:
                layer = SparseLinear.from_dense(linear, **spec.layer_options())
            except ValueError as err:
                raise ValueError(f"sparsify: layer {fqn!r} cannot be made 2:4: {err}") from None
            _set_submodule(model, fqn, layer)
            layers[fqn] = layer
    return SparseController(layers, spec, total_steps)


def densify(model: nn.Module) -> nn.Module:
    """Replace every SparseLinear by a plain nn.Linear holding its effective (masked, e.g. S-STE-scaled) weight.

    Returns `model` (or the new nn.Linear when `model` itself is a SparseLinear)."""
    if isinstance(model, SparseLinear):
        return model.to_dense()
    for fqn, module in list(model.named_modules()):
        if isinstance(module, SparseLinear):
            _set_submodule(model, fqn, module.to_dense())
    return model


def export_semi_structured(model: nn.Module) -> nn.Module:
    """Densify, then store each former SparseLinear weight as a CUDA semi-structured sparse tensor.

    Needs CUDA with 2:4 sparse tensor cores (sm_80+); uses cuSPARSELt (PyTorch's CUTLASS path
    refuses sm_90). The model must be in float16/bfloat16 on that GPU.
    """
    names = [fqn for fqn, m in model.named_modules() if isinstance(m, SparseLinear)]
    if not names:
        raise ValueError("export_semi_structured: the model has no SparseLinear layers")
    dense_ft = [fqn for fqn in names if model.get_submodule(fqn).mode == "dense"]
    if dense_ft:  # their weights are no longer 2:4: compression would drop half of them
        raise ValueError(f"export_semi_structured: {len(dense_ft)} layers (e.g. {dense_ft[0]}) are in dense mode "
                         "(dense fine-tuning), so their weights are not 2:4; export them dense instead")
    if not torch.cuda.is_available():
        raise RuntimeError("export_semi_structured needs a CUDA GPU with 2:4 sparse tensor cores; none is available")
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    densify(model)
    for fqn in names:
        linear = model.get_submodule(fqn)
        w = linear.weight
        if w.device.type != "cuda" or w.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"export_semi_structured: {fqn} weight must be fp16/bf16 on CUDA, got {w.dtype} on {w.device}")
        linear.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
    return model
