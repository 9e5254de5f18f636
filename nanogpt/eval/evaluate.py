"""Validation loss and perplexity of a checkpoint, after checking that its sparse layers really are 2:4."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from nanogpt.data.loader import TokenBatches
from nanogpt.eval.checkpoint import load_run
from nanogpt.train import evaluate as mean_loss
from sparse_core import SparseLinear, is_transposable_24, is_valid_24

__all__ = ["check_masks", "evaluate_checkpoint"]


def check_masks(model: torch.nn.Module) -> dict[str, Any]:
    """Count sparse / dense-fine-tuned layers; raise ValueError if a sparse layer's weight is not 2:4."""
    sparse, dense = [], []
    for fqn, m in model.named_modules():
        if not isinstance(m, SparseLinear):
            continue
        if m.mode == "dense":
            dense.append(fqn)
            continue
        if not is_valid_24(m.mask, dim=1):
            raise ValueError(f"{fqn}: mask is not 2:4 along the input dimension")
        if m.mask_kind == "transposable" and not is_transposable_24(m.mask):
            raise ValueError(f"{fqn}: mask_kind is 'transposable' but the mask is not 2:4 along both dimensions")
        if bool((m.effective_weight()[~m.mask] != 0).any()):
            raise ValueError(f"{fqn}: the forward weight has non-zeros outside its mask")
        sparse.append(fqn)
    return {"sparse_layers": len(sparse), "dense_finetuned_layers": len(dense), "masks_verified": True}


def evaluate_checkpoint(path: str | Path, split: str = "val", iters: int | None = None,
                        batch_size: int | None = None, data_dir: str | None = None,
                        device: str = "cpu") -> dict[str, Any]:
    """Mean loss and perplexity on `split` (the run's fixed eval windows by default) plus mask checks."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    run = load_run(path, device)
    cfg = run.config
    data = TokenBatches(Path(data_dir or cfg["data"]["dir"]) / f"{split}.bin", run.model.config.block_size,
                        batch_size or cfg["data"]["batch_size"], 1, cfg["seed"], device=device)
    batches = data.fixed_batches(iters or cfg["train"]["eval_iters"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()
    loss = mean_loss(run.model, batches, autocast, torch.device(device))
    return {"checkpoint": str(run.path), "step": run.step, "method": run.method, "split": split,
            "loss": loss, "perplexity": math.exp(min(loss, 50.0)), **check_masks(run.model)}
