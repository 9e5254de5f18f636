"""Cramming-style MLM pre-training on a budget, FFNs made 2:4 by `sparse_core`.

    python -m cramming.train                                  # tiny, embedded corpus, CPU, a few minutes
    python -m cramming.train method=2by4 budget.steps=600
    python -m cramming.train --config-name crammed method=2by4 budget.minutes=1440 budget.expected_steps=...
    torchrun --nproc_per_node 8 -m cramming.train --config-name crammed ...

Writes out/<run>/: metrics.jsonl, plots/, checkpoints/ (atomic, exact resume), model/ (HF layout:
config.json + model.safetensors + tokenizer, the input of `cramming.eval.glue`), summary.json.
A `RunGuard` skips and counts non-finite steps (stopping with a checkpoint after max_bad_steps in a row)
and turns SIGTERM/SIGINT into a checkpoint and a clean exit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import sparse_core
from cramming.config import CONFIG_DIR, CrammingConfig
from cramming.data import MLMBatches, build_corpus, mask_tokens
from cramming.model import CrammedBertConfig, CrammedBertForMaskedLM
from sparse_core.train import (CheckpointManager, RunGuard, all_reduce_mean, barrier, broadcast_object, build_logger,
                               config_to_dict, decay_param_groups, distributed_session, gather_rng_states, load_config,
                               no_sync_unless, one_cycle_lr, optimizer_step, parse_cli, plot_metrics, progress_bar,
                               restore, restore_rng_states, run_main, set_lr, wrap_ddp)

__all__ = ["build_model", "param_groups", "evaluate_mlm", "train", "main"]


def build_model(cfg: CrammingConfig, vocab_size: int, pad_token_id: int) -> CrammedBertForMaskedLM:
    """The MLM model of `cfg.model`; the 'half' method halves the FFN width here."""
    m = cfg.model
    return CrammedBertForMaskedLM(CrammedBertConfig(
        vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=sparse_core.ffn_hidden_dim(m.intermediate_size, cfg.method),
        max_position_embeddings=m.max_position, type_vocab_size=m.type_vocab_size, hidden_dropout_prob=m.dropout,
        layer_norm_eps=m.layer_norm_eps, initializer_range=m.initializer_range, pad_token_id=pad_token_id))


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, rows: torch.Tensor, batches: MLMBatches, device: torch.device,
                 autocast: Any, batch_size: int) -> float:
    """Mean MLM loss on `rows`, masked with a fixed generator so every evaluation sees the same targets."""
    model.eval()
    g = torch.Generator().manual_seed(1234)
    total = torch.zeros((), device=device)
    n = 0
    for i in range(0, len(rows), batch_size):
        inputs, labels = mask_tokens(rows[i:i + batch_size], generator=g, **batches.mask_args)
        inputs = inputs.to(device)
        with autocast():
            total += model(inputs, token_type_ids=torch.zeros_like(inputs), labels=labels.to(device)).loss.float()
        n += 1
    model.train()
    return float(all_reduce_mean(total / max(n, 1)))  # .item() sync


def _autocast_factory(device: torch.device, dtype: str) -> Any:
    if device.type == "cuda" and dtype != "float32":
        amp = getattr(torch, dtype)
        return lambda: torch.autocast("cuda", dtype=amp)
    return contextlib.nullcontext


def train(cfg: CrammingConfig) -> dict[str, float]:
    """Pre-train within the budget; returns the final summary (also written to summary.json)."""
    with distributed_session(cfg.device) as env:
        return _train(cfg, env)


def _train(cfg: CrammingConfig, env: Any) -> dict[str, float]:
    device = env.device
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.out_dir) / cfg.run_name
    micro_world = cfg.optim.micro_batch_size * env.world_size
    if cfg.optim.batch_size % micro_world:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} is not a multiple of micro_batch_size x world "
                         f"size = {micro_world}")
    accumulation = cfg.optim.batch_size // micro_world

    # ---- data, model, sparse controller, optimizer ----
    if env.is_main:
        tokenizer, train_rows, val_rows = build_corpus(cfg.data, run_dir, cfg.seed)
    barrier()
    if not env.is_main:
        tokenizer, train_rows, val_rows = build_corpus(cfg.data, run_dir, cfg.seed)  # reads rank 0's cache
    special = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    batches = MLMBatches(train_rows, micro_batch_size=cfg.optim.micro_batch_size, accumulation=accumulation,
                         world_size=env.world_size, rank=env.rank, seed=cfg.seed, mask_id=tokenizer.mask_token_id,
                         vocab_size=len(tokenizer), special_ids=special, probability=cfg.data.mlm_probability)
    model = build_model(cfg, len(tokenizer), tokenizer.pad_token_id)
    total_steps = cfg.budget.total_steps
    ctl = sparse_core.sparsify(model, method=cfg.method, total_steps=total_steps, **cfg.sparse)
    model.to(device)
    torch.manual_seed(cfg.seed + 1 + env.rank)  # same init everywhere, then an own stream per rank (MVUE draws)
    optimizer = torch.optim.AdamW(decay_param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, fused=device.type == "cuda")
    ctl.bind_optimizer(optimizer)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.dtype == "float16" else None
    autocast = _autocast_factory(device, cfg.dtype)
    fwd = model
    if env.world_size > 1:
        fwd = wrap_ddp(model, device)
    if cfg.compile:
        fwd = torch.compile(fwd)

    # ---- resume ----
    ckpt = CheckpointManager(run_dir / "checkpoints", keep_last=cfg.keep_checkpoints)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "sparse": ctl}
    if scaler is not None:
        state["scaler"] = scaler

    def save(at: int, elapsed: float | None = None) -> Path | None:
        elapsed = elapsed_before + time.perf_counter() - start if elapsed is None else elapsed
        rngs = gather_rng_states()  # a collective: every rank calls save
        path = None
        if env.is_main:
            path = ckpt.save(at, {**state, "rng": rngs, "progress": {"step": at, "elapsed": elapsed},
                                  "config": config_to_dict(cfg)})
        barrier()
        return path

    guard = RunGuard(save, max_bad_steps=cfg.max_bad_steps)  # non-finite steps, SIGTERM/SIGINT, test faults
    guard.install(model, optimizer)
    state["guard"] = guard
    step, elapsed_before, saved_at = 0, 0.0, None
    if not cfg.resume:
        ckpt.require_empty("resume=true")
    found = ckpt.load_latest(map_location=device) if cfg.resume else None
    if found is not None:
        step, loaded = found
        restore(state, loaded, optional=("guard",))  # checkpoints from before the guard existed lack it
        elapsed_before = float(loaded["progress"]["elapsed"])
        restore_rng_states(loaded.get("rng"), env.rank, env.world_size, reseed=cfg.seed + 1 + env.rank + 7919 * step)
        if env.is_main:
            print(f"resumed from {ckpt.path_for(step)} at step {step}")
    logger = build_logger(run_dir, cfg.wandb, cfg.wandb_project, cfg.run_name, config_to_dict(cfg), env.is_main)
    if env.is_main:
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{cfg.run_name}: method={cfg.method} params={n_params / 1e6:.2f}M train_seqs={len(train_rows)} "
              f"accumulation={accumulation} device={device} {ctl!r}")

    budget_s = None if cfg.budget.minutes is None else cfg.budget.minutes * 60.0
    bar = progress_bar(total_steps, initial=min(step, total_steps), enabled=env.is_main and cfg.progress)
    start = time.perf_counter()
    tokens_per_step = cfg.optim.batch_size * cfg.data.seq_len
    loss_acc, t_log, steps_since_log = torch.zeros((), device=device), time.perf_counter(), 0
    losses_since_log = 0  # applied steps: a skipped (non-finite) step's loss is not in train/loss
    val_loss, val_step = float("nan"), -1
    stop_step = None if cfg.stop_after_steps is None else step + cfg.stop_after_steps

    # ---- the loop: LR over the budget, accumulate, clip, controller + optimizer step, log, eval, save ----
    with guard:  # SIGTERM/SIGINT only set a flag; the loop stops at a step boundary
        while True:
            elapsed = elapsed_before + time.perf_counter() - start
            if env.world_size > 1 and budget_s is not None:
                elapsed = broadcast_object(elapsed)  # rank 0's clock: every rank stops together, with the same lr
            done = step >= cfg.budget.steps if budget_s is None else elapsed >= budget_s
            if done or (stop_step is not None and step >= stop_step):
                break
            if budget_s is None:
                lr = one_cycle_lr(step, base_lr=cfg.optim.lr, total_steps=cfg.budget.steps,
                                  warmup_fraction=cfg.optim.warmup_fraction, final_fraction=cfg.optim.final_fraction)
            else:
                lr = one_cycle_lr(elapsed, base_lr=cfg.optim.lr, total_steps=budget_s,
                                  warmup_fraction=cfg.optim.warmup_fraction, final_fraction=cfg.optim.final_fraction)
            set_lr(optimizer, lr)
            guard.begin_step(step)
            step_loss = torch.zeros((), device=device)
            for micro in range(accumulation):
                batch = batches.batch(step, micro)
                with no_sync_unless(fwd, sync=micro == accumulation - 1):  # DDP syncs the last micro-batch only
                    ids = batch["input_ids"].to(device, non_blocking=True)
                    with autocast():  # segment A everywhere: trains token_type[0] (GLUE uses it; DDP needs a grad)
                        loss = guard.loss(fwd(ids, token_type_ids=torch.zeros_like(ids),
                                              labels=batch["labels"].to(device, non_blocking=True)).loss) / accumulation
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                step_loss += loss.detach()
            result = optimizer_step(model, optimizer, controller=ctl, scaler=scaler, clip_norm=cfg.optim.clip_norm,
                                    step=step)
            guard.after_step(step, result, step_loss)  # skipped steps counted; max_bad_steps in a row: save, stop
            if not result.skipped:
                loss_acc += step_loss
                losses_since_log += 1
            step += 1
            steps_since_log += 1
            bar.update(1)

            if cfg.log_interval and step % cfg.log_interval == 0:
                train_loss = float(all_reduce_mean(loss_acc / losses_since_log)) if losses_since_log else math.nan
                now = time.perf_counter()
                metrics = {"train/loss": train_loss, "train/lr": lr, "train/grad_norm": result.grad_norm or 0.0,
                           "train/skipped": float(result.skipped), "train/elapsed_s": elapsed_before + now - start,
                           "train/tokens_per_s": tokens_per_step * steps_since_log / (now - t_log), **guard.metrics(),
                           **ctl.metrics()}
                logger.log(metrics, step)
                bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}")
                loss_acc.zero_()
                t_log, steps_since_log, losses_since_log = now, 0, 0
            t_aside = time.perf_counter()  # evaluation and checkpoints are not training time: left out of tokens/s
            if cfg.eval_interval and step % cfg.eval_interval == 0 and len(val_rows):
                val_loss, val_step = evaluate_mlm(model, val_rows, batches, device, autocast, cfg.optim.micro_batch_size), step
                logger.log({"val/loss": val_loss}, step)
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
                save(step)
                saved_at = step
            t_log += time.perf_counter() - t_aside
            guard.stop_if_requested(step)  # SIGTERM/SIGINT: checkpoint, say how to resume, exit 0
    bar.close()

    # ---- final: checkpoint, validation, HF export, plots, summary ----
    elapsed = elapsed_before + time.perf_counter() - start
    if saved_at != step:  # the loop's last interval checkpoint may already be this step's
        save(step, elapsed)
    finished = done  # the budget ran out (also when stop_after_steps ended at the same step)
    if len(val_rows) and val_step != step:
        val_loss = evaluate_mlm(model, val_rows, batches, device, autocast, cfg.optim.micro_batch_size)
        logger.log({"val/loss": val_loss}, step)
    summary = {"method": cfg.method, "steps": step, "elapsed_s": elapsed, "val_loss": val_loss,
               "finished": float(finished)}
    if env.is_main:
        if finished:
            export = sparse_core.densify(copy.deepcopy(model)).cpu()
            export.save_pretrained(run_dir / "model")
            tokenizer.save(run_dir / "model")
        logger.close()
        panels = {"loss": ["train/loss", "val/loss"], "lr": ["train/lr"], "grad_norm": ["train/grad_norm"]}
        if ctl.layers:
            panels["sparse"] = ["sparse/flip_rate", "sparse/lambda_w", "sparse/dense"]
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots", panels)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"done: step {step}, {elapsed:.0f}s, val MLM loss {val_loss:.4f}; outputs in {run_dir}")
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """CLI: `[--config-name NAME] key=value ...` (hydra overrides on the dataclass schema)."""
    name, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    cfg = load_config(CrammingConfig, CONFIG_DIR, name or "tiny", overrides)
    return train(cfg)


if __name__ == "__main__":
    run_main(main)  # config errors, unusable checkpoints, a diverged run: one line, exit code 1
