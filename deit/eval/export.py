"""Export a checkpoint for inference: a dense timm model, or PyTorch semi-structured 2:4 weights.

    python -m deit.eval.export out/tiny/ckpt/ckpt_00000345.pt --out out/tiny/export            # dense
    python -m deit.eval.export CKPT --out DIR --format semi-structured                          # CUDA sm_80+

dense: DIR/model.safetensors holds the densified weights (each FFN weight = M*W) under timm's own
names, DIR/model.json the `timm.create_model` name and kwargs; the export is reloaded into a fresh
timm model and must give the checkpoint's logits. semi-structured: DIR/model_semi_structured.pt, the
whole module (`torch.load(..., weights_only=False)`), FFN weights as SparseSemiStructuredTensor in
bf16, checked against the dense model within bf16 tolerance.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

import deit._torchvision_compat  # noqa: F401  (before timm)
import sparse_core
from deit.models import timm_kwargs

__all__ = ["export_dense", "export_semi_structured", "main"]


def _probe(img_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.randn(4, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def export_dense(model: nn.Module, cfg: Any, meta: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write model.safetensors + model.json; reload them into timm and check the logits match."""
    import timm
    from safetensors.torch import load_file, save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dense = sparse_core.densify(copy.deepcopy(model).cpu()).eval()
    weights = {k: v.contiguous() for k, v in dense.state_dict().items()}
    save_file(weights, str(out_dir / "model.safetensors"))
    kwargs = timm_kwargs(cfg.model, cfg.data.img_size, int(meta["num_classes"]))
    if cfg.method == "half":
        fc1 = dense.blocks[0].mlp.fc1
        kwargs["mlp_ratio"] = fc1.out_features / fc1.in_features
    spec = {"timm_name": cfg.model.name, "create_kwargs": kwargs, "class_names": list(meta["class_names"]),
            "method": cfg.method, "img_size": cfg.data.img_size}
    (out_dir / "model.json").write_text(json.dumps(spec, indent=1))

    reloaded = timm.create_model(cfg.model.name, pretrained=False, **kwargs).eval()
    reloaded.load_state_dict(load_file(str(out_dir / "model.safetensors")), strict=True)
    x = _probe(cfg.data.img_size)
    diff = float((reloaded(x) - model.cpu()(x)).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"dense export differs from the checkpoint's model: max |logit diff| = {diff}")
    return {"format": "dense", "files": [str(out_dir / "model.safetensors"), str(out_dir / "model.json")],
            "max_abs_logit_diff": diff}


@torch.no_grad()
def export_semi_structured(model: nn.Module, cfg: Any, out_dir: str | Path) -> dict[str, Any]:
    """Write the bf16 CUDA model with semi-structured FFN weights; check it against the dense model."""
    if not torch.cuda.is_available():
        raise RuntimeError("--format semi-structured needs a CUDA GPU with 2:4 sparse tensor cores (sm_80+)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cuda", torch.bfloat16)
    reference = sparse_core.densify(copy.deepcopy(model)).eval()
    sparse = sparse_core.export_semi_structured(model)
    x = _probe(cfg.data.img_size, "cuda").to(torch.bfloat16)
    ref, got = reference(x).float(), sparse(x).float()
    rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    if rel > 5e-2:
        raise RuntimeError(f"semi-structured export differs from the dense model: max rel logit diff = {rel}")
    path = out_dir / "model_semi_structured.pt"
    torch.save(sparse, path)
    return {"format": "semi-structured", "files": [str(path)], "max_rel_logit_diff": rel}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: export one checkpoint (model or EMA weights)."""
    from deit.eval.evaluate import load_checkpoint_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--format", choices=("dense", "semi-structured"), default="dense")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    args = p.parse_args(argv)
    if args.format == "semi-structured" and not torch.cuda.is_available():
        p.error("--format semi-structured needs a CUDA GPU with 2:4 sparse tensor cores (sm_80+); none is available")
    model, cfg, meta = load_checkpoint_model(args.checkpoint, "cpu", args.ema)
    if args.format == "dense":
        result = export_dense(model, cfg, meta, args.out)
    else:
        result = export_semi_structured(model, cfg, args.out)
    print(json.dumps({"checkpoint": str(args.checkpoint), **result}))
    return result


if __name__ == "__main__":
    main()
