"""GLUE fine-tuning of a pre-trained crammed BERT (the `model/` folder that cramming.train writes).

    python -m cramming.eval.glue checkpoint=out/cramming-tiny/model data_dir=../shared/data/glue \
        tasks=[rte,sst2,mrpc,stsb,cola]
    python -m cramming.eval.glue checkpoint=out/run/model            # all 8 tasks via HF datasets

Each task: a fresh classification head on the encoder, AdamW with linear warm-up/decay, then the
task's metrics on its dev split. Writes `<checkpoint>/glue.json` (or `out=`); `cramming.eval.table`
turns several of these into a markdown table comparing methods.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import sparse_core
from cramming.eval.metrics import METRICS
from cramming.eval.tasks import TASKS, Example, Task, load_split, task_score
from cramming.model import CrammedBertForSequenceClassification
from cramming.tokenizer import WordPieceTokenizer, load_tokenizer
from sparse_core.train import decay_param_groups, load_config, one_cycle_lr, optimizer_step, parse_cli, set_lr

__all__ = ["GlueConfig", "finetune", "evaluate", "run_glue", "main"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "eval"


@dataclass
class GlueConfig:
    """Fine-tuning settings shared by the tasks (Cramming: a few epochs, small LR, batch 16-32)."""

    checkpoint: str = ""  # folder with config.json + model.safetensors + tokenizer.json
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    data_dir: Optional[str] = None  # folder in the GLUE layout (CoLA/, SST-2/, ...); None: HF datasets
    label: Optional[str] = None  # row name in result tables (default: the pre-training method)
    method: str = "dense"  # sparse_core method during fine-tuning ('dense': fine-tune the 2:4 weights densely)
    epochs: float = 3.0
    lr: float = 4e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    batch_size: int = 32
    max_length: int = 128
    max_train_rows: Optional[int] = None  # cap per task, e.g. for a quick check
    max_eval_rows: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    out: Optional[str] = None  # results JSON (default <checkpoint>/glue.json)

    def validate(self) -> None:
        if not self.checkpoint:
            raise ValueError("give checkpoint=<folder written by cramming.train, e.g. out/cramming-tiny/model>")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty list of {list(TASKS)}, got {self.tasks}")
        if self.method not in sparse_core.METHODS or self.method == "half":
            raise ValueError(f"method must be one of {sorted(set(sparse_core.METHODS) - {'half'})}, got {self.method!r}")
        if not self.epochs > 0 or not self.lr > 0 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError(f"need epochs > 0, lr > 0, batch_size >= 1, max_length >= 8; got {self.epochs}, "
                             f"{self.lr}, {self.batch_size}, {self.max_length}")


def _batches(enc: dict[str, list[list[int]]], labels: list[float], order: Sequence[int], batch_size: int,
             pad_id: int, regression: bool) -> Any:
    """Padded (input_ids, token_type_ids, attention_mask, labels) batches in `order`."""
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        T = max(len(enc["input_ids"][j]) for j in idx)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        types = torch.zeros((len(idx), T), dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for r, j in enumerate(idx):
            n = len(enc["input_ids"][j])
            ids[r, :n] = torch.tensor(enc["input_ids"][j])
            types[r, :n] = torch.tensor(enc["token_type_ids"][j])
            mask[r, :n] = 1
        y = torch.tensor([labels[j] for j in idx], dtype=torch.float32 if regression else torch.long)
        yield ids, types, mask, y


def _encode(tokenizer: WordPieceTokenizer, rows: list[Example], max_length: int) -> dict[str, list[list[int]]]:
    pairs = None if rows[0].text_b is None else [r.text_b for r in rows]
    return tokenizer.encode([r.text_a for r in rows], pairs, max_length=max_length)


@torch.no_grad()
def evaluate(model: CrammedBertForSequenceClassification, tokenizer: WordPieceTokenizer, task: Task,
             rows: list[Example], batch_size: int, max_length: int, device: torch.device) -> dict[str, float]:
    """The task's metrics of `model` on `rows`."""
    model.eval()
    enc = _encode(tokenizer, rows, max_length)
    labels = [r.label for r in rows]
    regression = task.num_labels == 1
    preds: list[float] = []
    for ids, types, mask, _ in _batches(enc, labels, list(range(len(rows))), batch_size, tokenizer.pad_token_id,
                                        regression):
        logits = model(ids.to(device), mask.to(device), types.to(device)).logits.float()
        preds.extend((logits.squeeze(-1) if regression else logits.argmax(-1)).cpu().tolist())
    model.train()
    if regression:
        return {m: METRICS[m](labels, preds) for m in task.metrics}
    return {m: METRICS[m]([int(v) for v in labels], preds) for m in task.metrics}


def finetune(cfg: GlueConfig, task: Task, train_rows: list[Example], device: torch.device
             ) -> tuple[CrammedBertForSequenceClassification, WordPieceTokenizer]:
    """A fresh copy of the checkpoint with a new head, fine-tuned on `train_rows`; and its tokenizer."""
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.checkpoint)
    model = CrammedBertForSequenceClassification.from_pretrained(cfg.checkpoint, num_labels=task.num_labels)
    steps_per_epoch = -(-len(train_rows) // cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    ctl = sparse_core.sparsify(model, method=cfg.method, total_steps=total)
    model.to(device)
    optimizer = torch.optim.AdamW(decay_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-12)
    ctl.bind_optimizer(optimizer)
    enc = _encode(tokenizer, train_rows, cfg.max_length)
    labels = [r.label for r in train_rows]
    regression = task.num_labels == 1
    g = torch.Generator().manual_seed(cfg.seed)
    step = 0
    while step < total:  # epochs of reshuffled batches until the step budget is used
        order = torch.randperm(len(train_rows), generator=g).tolist()
        for ids, types, mask, y in _batches(enc, labels, order, cfg.batch_size, tokenizer.pad_token_id, regression):
            if step >= total:
                break
            set_lr(optimizer, one_cycle_lr(step, base_lr=cfg.lr, total_steps=total,
                                           warmup_fraction=cfg.warmup_fraction, final_fraction=0.0))
            loss = model(ids.to(device), mask.to(device), types.to(device), labels=y.to(device)).loss
            loss.backward()
            optimizer_step(model, optimizer, controller=ctl, clip_norm=1.0, step=step)
            step += 1
    return model, tokenizer


def _default_label(checkpoint: Path) -> str:
    run_config = checkpoint.parent / "config.json"
    if run_config.is_file():
        return str(json.loads(run_config.read_text()).get("method", checkpoint.parent.name))
    return checkpoint.parent.name


def run_glue(cfg: GlueConfig) -> dict[str, Any]:
    """Fine-tune and score every task of `cfg`; returns (and writes) the results with the GLUE average."""
    from sparse_core.train.distributed import init_distributed

    device = init_distributed(cfg.device).device
    positions = json.loads((Path(cfg.checkpoint) / "config.json").read_text())["max_position_embeddings"]
    if cfg.max_length > positions:  # longer inputs would need position embeddings the model does not have
        print(f"max_length {cfg.max_length} > the model's {positions} positions: using {positions}", flush=True)
        cfg = replace(cfg, max_length=positions)
    results: dict[str, Any] = {}
    splits = {name: (load_split(TASKS[name], "train", cfg.data_dir, cfg.max_train_rows),  # all read first: a
                     load_split(TASKS[name], "dev", cfg.data_dir, cfg.max_eval_rows))    # missing task fails at once
              for name in cfg.tasks}
    for name, (train_rows, dev_rows) in splits.items():
        task = TASKS[name]
        model, tokenizer = finetune(cfg, task, train_rows, device)
        metrics = evaluate(model, tokenizer, task, dev_rows, cfg.batch_size, cfg.max_length, device)
        results[name] = {**metrics, "score": task_score(metrics), "train_rows": len(train_rows),
                         "dev_rows": len(dev_rows)}
        print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    checkpoint = Path(cfg.checkpoint)
    out = {"label": cfg.label or _default_label(checkpoint), "checkpoint": str(checkpoint), "tasks": results,
           "glue_average": sum(r["score"] for r in results.values()) / len(results),
           "settings": {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "method": cfg.method,
                        "max_train_rows": cfg.max_train_rows, "max_eval_rows": cfg.max_eval_rows,
                        "data": cfg.data_dir or "hf datasets"}}
    path = Path(cfg.out) if cfg.out else checkpoint / "glue.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"GLUE average ({len(results)} tasks): {100 * out['glue_average']:.2f}; written to {path}")
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: `[--config-name NAME] checkpoint=... tasks=[rte,sst2] data_dir=...`."""
    name, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    return run_glue(load_config(GlueConfig, CONFIG_DIR, name or "glue", overrides))


if __name__ == "__main__":
    main()
