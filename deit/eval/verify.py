"""Verify the 2:4 masks of a checkpoint: every sparse FFN layer is 2:4 and its forward is M*W.

    python -m deit.eval.verify out/tiny/ckpt/ckpt_00000345.pt [--require-sparse]

Per layer: mode, mask 2:4 along in-features, transposable (when mask_kind says so), no non-zero of
the weight the forward uses outside the mask, density. Layers switched to dense (2by4's dense
fine-tuning) are reported, not failed, unless --require-sparse. Whole model: the sparse forward equals the forward
of the densified copy (plain nn.Linear holding M*W) on a random batch. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

import sparse_core
from sparse_core import SparseLinear

__all__ = ["verify_model", "main"]


def _layer_report(layer: SparseLinear) -> dict[str, Any]:
    eff = layer.effective_weight() if layer.mode == "sparse" else layer.weight.detach()  # what forward uses
    nonzero = eff != 0
    groups = nonzero.reshape(nonzero.shape[0], -1, 4).sum(-1)  # non-zeros per group of 4 along `in`
    report = {
        "mode": layer.mode,
        "mask_kind": layer.mask_kind,
        "mask_is_24": sparse_core.is_valid_24(layer.mask, dim=1),
        "nonzero_outside_mask": int((nonzero & ~layer.mask).sum()),
        "max_nonzero_per_group": int(groups.max()),
        "density": float(nonzero.float().mean()),
    }
    if layer.mask_kind == "transposable":
        report["mask_is_transposable"] = sparse_core.is_transposable_24(layer.mask)
    mask_ok = report["mask_is_24"] and report.get("mask_is_transposable", True)
    weight_ok = report["nonzero_outside_mask"] == 0 and report["max_nonzero_per_group"] <= 2
    report["ok"] = bool(mask_ok and (weight_ok or layer.mode == "dense"))  # a dense layer keeps its mask only
    return report


@torch.no_grad()
def verify_model(model: nn.Module, img_size: int, require_sparse: bool = False) -> dict[str, Any]:
    """Per-layer mask report plus the sparse-vs-densified forward difference; 'ok' sums it up."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    reports = {name: _layer_report(m) for name, m in layers.items()}
    failures = [n for n, r in reports.items() if not r["ok"]]
    if require_sparse:
        failures += [n for n, r in reports.items() if r["mode"] != "sparse"]
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(4, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)
    dense_copy = sparse_core.densify(copy.deepcopy(model))
    diff = float((model(x) - dense_copy(x)).abs().max())
    forward_ok = diff <= 1e-4
    return {"layers": reports, "sparse_layers": sum(r["mode"] == "sparse" for r in reports.values()),
            "dense_layers": sum(r["mode"] == "dense" for r in reports.values()),
            "forward_max_abs_diff": diff, "failures": failures,
            "ok": bool(layers) and not failures and forward_ok}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: print the JSON report of a checkpoint; exit 1 when it fails."""
    from deit.eval.evaluate import load_checkpoint_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--ema", action="store_true", help="verify the EMA weights")
    p.add_argument("--require-sparse", action="store_true",
                   help="fail if any layer runs dense (e.g. after 2by4's dense fine-tuning)")
    args = p.parse_args(argv)
    model, cfg, _ = load_checkpoint_model(args.checkpoint, "cpu", args.ema)
    report = verify_model(model, cfg.data.img_size, args.require_sparse)
    if not any(True for m in model.modules() if isinstance(m, SparseLinear)):
        report["failures"] = [f"method {cfg.method!r} has no sparse layers"]
    print(json.dumps({"checkpoint": str(args.checkpoint), "method": cfg.method, **report}, indent=1))
    if not report["ok"]:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
