"""Export a trained sparse GPT for inference: as a dense checkpoint, or with its 2:4 FFN weights compressed.

Both are ordinary checkpoints (atomic, sha256 manifest, `weights_only` loadable) that `load_run`,
`evaluate` and `sample` read. 'dense': every SparseLinear becomes an nn.Linear holding M*W.
'semi-structured': the same, but each 2:4 weight is stored as its kept values (out, in/2) plus one
uint8 of positions per group of 4, about 56% of the bytes of a bf16 weight; on a GPU, `sample
--semi-structured` turns them into PyTorch semi-structured sparse tensors.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import sparse_core
from nanogpt.eval.checkpoint import compress_24, load_run
from sparse_core import SparseLinear
from sparse_core.train import CheckpointManager

__all__ = ["export", "EXPORT_KINDS"]

EXPORT_KINDS = ("dense", "semi-structured")


def export(path: str | Path, out_dir: str | Path, kind: str = "dense") -> Path:
    """Write the exported checkpoint of the run / checkpoint at `path` into `out_dir`; returns the file."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"export kind must be one of {EXPORT_KINDS}, got {kind!r}")
    run = load_run(path)
    sparse = {fqn: m for fqn, m in run.model.named_modules() if isinstance(m, SparseLinear)}
    compressed = {}
    if kind == "semi-structured":
        if not sparse:
            raise ValueError(f"{run.path} is a {run.method!r} model: it has no 2:4 layers to compress")
        dense_ft = [fqn for fqn, m in sparse.items() if m.mode == "dense"]
        if dense_ft:
            raise ValueError(f"{run.path}: {len(dense_ft)} layers (e.g. {dense_ft[0]}) were switched to dense "
                             "fine-tuning, so their weights are no longer 2:4; export a checkpoint from before the "
                             "switch (train.stop_at / an earlier ckpt_*.pt) or export kind 'dense'")
        for fqn, layer in sparse.items():
            values, indices = compress_24(layer.effective_weight(), layer.mask)
            compressed[fqn] = {"values": values, "indices": indices}
    sparse_core.densify(run.model)
    weights = {k: v for k, v in run.model.state_dict().items()
               if k.removesuffix(".weight") not in compressed or not k.endswith(".weight")}
    config = dict(run.config, method="dense")
    state = {"model": weights, "model_args": asdict(run.model.config), "method": "dense", "meta": run.meta,
             "config": config, "exported_from": {"path": str(run.path), "method": run.method, "kind": kind}}
    if compressed:
        state["compressed"] = compressed
    return CheckpointManager(out_dir, keep_last=1).save(run.step, state)
