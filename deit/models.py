"""A timm Vision Transformer whose FFN linears (blocks.N.mlp.fc1/fc2) are made 2:4 by sparse_core.

    model, ctl = build_model(cfg.model, img_size=32, num_classes=10, method="2by4", total_steps=N)

The model comes from `timm.create_model` (DeiT's own ViT definitions), sized for small images by its
kwargs (img_size, patch_size, embed_dim, depth, num_heads). 'half' is a construction choice: the same
model with mlp_ratio halved (sparse_core.ffn_hidden_dim). Every other method swaps fc1/fc2 for
SparseLinear, which runs on the fast GPU backend when one is available and the reference one elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

import deit._torchvision_compat  # noqa: F401  (before timm)
import sparse_core
from deit.config import ModelConfig

__all__ = ["FFN_LINEARS", "timm_kwargs", "create_vit", "build_model"]

FFN_LINEARS = r"blocks\.\d+\.mlp\.fc[12]"  # timm ViT: Block.mlp = Mlp(fc1, act, fc2)


def timm_kwargs(cfg: ModelConfig, img_size: int, num_classes: int) -> dict[str, Any]:
    """`timm.create_model` keyword arguments: the set ModelConfig fields override the named model's."""
    kwargs: dict[str, Any] = {"img_size": img_size, "num_classes": num_classes, "drop_path_rate": cfg.drop_path}
    for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"):
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


def create_vit(cfg: ModelConfig, img_size: int, num_classes: int, method: str) -> nn.Module:
    """The dense timm ViT for `method` (random init; FFN width halved for 'half')."""
    import timm

    if cfg.name not in timm.list_models():
        raise ValueError(f"model.name {cfg.name!r} is not a timm model; e.g. {timm.list_models('deit_*')[:4]}")
    kwargs = timm_kwargs(cfg, img_size, num_classes)
    if method == "half":
        with torch.device("meta"):  # read the default widths without allocating the model
            probe = timm.create_model(cfg.name, pretrained=False, **kwargs)
        fc1 = probe.blocks[0].mlp.fc1
        kwargs["mlp_ratio"] = sparse_core.ffn_hidden_dim(fc1.out_features, "half") / fc1.in_features
    model = timm.create_model(cfg.name, pretrained=False, **kwargs)
    if not hasattr(model, "blocks"):
        raise ValueError(f"model.name {cfg.name!r} is not a ViT with .blocks[i].mlp; this recipe trains timm ViTs")
    return model


def build_model(cfg: ModelConfig, img_size: int, num_classes: int, method: str, total_steps: int | None,
                sparse_options: dict[str, Any] | None = None) -> tuple[nn.Module, sparse_core.SparseController]:
    """The ViT with its FFN linears sparsified by `method`, and the controller the loop calls."""
    model = create_vit(cfg, img_size, num_classes, method)
    ctl = sparse_core.sparsify(model, method=method, include=FFN_LINEARS, total_steps=total_steps,
                               **(sparse_options or {}))
    return model, ctl
