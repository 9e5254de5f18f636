"""Top-1 / top-5 of a model on an eval loader, and a checkpoint rebuilt into its model.

    python -m deit.eval.evaluate out/tiny/ckpt/ckpt_00000300.pt [--ema] [--data-path DIR] [--data-source S]

Prints one JSON line: {"loss", "top1", "top5", "images", ...}; top-k in percent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import deit._torchvision_compat  # noqa: F401  (before timm)
from sparse_core.train.distributed import all_reduce_mean

__all__ = ["evaluate", "load_checkpoint_model", "main"]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device,
             autocast: Any = None) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 accuracy (percent) over every rank's shard of `loader`."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, images
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast if autocast is not None else contextlib.nullcontext():
            logits = model(x)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        hits = top == y[:, None]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hits[:, :1].sum().double(),
                             hits.sum().double(), torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    model.train(was_training)
    loss, top1, top5, n = all_reduce_mean(sums).tolist()  # means over ranks: ratios of the sums stay exact
    if n == 0:
        raise ValueError("evaluate: the eval loader gave no images")
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu",
                          use_ema: bool = False) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model with the checkpoint's weights, masks and sparse/dense modes, its DeiTConfig, its meta)."""
    from deit.config import config_from_dict
    from deit.models import build_model
    from sparse_core.train.checkpoint import load_checkpoint

    _, state = load_checkpoint(path, map_location="cpu")
    for key in ("config", "meta", "model", "controller"):
        if key not in state:
            raise ValueError(f"{path}: not a deit checkpoint (no {key!r} entry; it has {sorted(state)})")
    cfg = config_from_dict(state["config"])
    meta = state["meta"]
    model, ctl = build_model(cfg.model, cfg.data.img_size, int(meta["num_classes"]), cfg.method,
                             int(meta["total_steps"]), cfg.sparse)
    if use_ema:
        if "ema" not in state:
            raise ValueError(f"{path}: --ema asked for, but the run had no EMA (ema=false)")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    else:
        weights = state["model"]
    model.load_state_dict(weights)
    ctl.load_state_dict(state["controller"])  # restores the sparse/dense mode of every layer
    return model.to(device).eval(), cfg, meta


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """CLI: evaluate a checkpoint on its own val set (or another one of the same classes)."""
    from deit.data import Augmented, build_datasets, build_transforms, eval_loader

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--data-source", help="override the checkpoint's data.source")
    p.add_argument("--data-path", help="override the checkpoint's data.path")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")

    device = torch.device(args.device)
    model, cfg, meta = load_checkpoint_model(args.checkpoint, device, args.ema)
    data_cfg = dataclasses.replace(cfg.data, source=args.data_source or cfg.data.source,
                                   path=args.data_path if args.data_path is not None else cfg.data.path)
    data = build_datasets(data_cfg)
    if data.num_classes != int(meta["num_classes"]):
        raise ValueError(f"the val set has {data.num_classes} classes, the checkpoint {meta['num_classes']}")
    _, eval_tf = build_transforms(data_cfg, cfg.aug)
    loader = eval_loader(Augmented(data.val, eval_tf), args.batch_size, 0, 1, args.num_workers)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    result = {**evaluate(model, loader, device, autocast), "images": len(data.val),
              "checkpoint": str(args.checkpoint), "ema": args.ema}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
