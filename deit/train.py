"""Train a timm ViT the DeiT way with 2:4-sparse FFNs.

    python -m deit.train                                   # tiny ViT on the built-in digits, CPU, minutes
    python -m deit.train --config-name deit_small data.path=/data/imagenet method=2by4
    torchrun --nproc_per_node 8 -m deit.train --config-name deit_base data.path=/data/imagenet

DeiT's recipe through timm's own parts: create_transform (RandAugment, random erasing), Mixup/CutMix
with label smoothing (SoftTargetCrossEntropy), create_optimizer_v2 (AdamW or Lion),
create_scheduler_v2 (warm-up + cosine, per step), drop-path, optional repeated augmentation and
ModelEmaV3. The loop: micro-batches (bf16 autocast on CUDA) -> sparse_core's optimizer_step (clip,
ctl.before_optimizer_step, optimizer.step, ctl.after_optimizer_step) -> log, evaluate, checkpoint; a
`RunGuard` skips and counts non-finite steps (stopping with a checkpoint after max_bad_steps in a row)
and turns SIGTERM/SIGINT into a checkpoint and a clean exit. Output: out_dir/run_name/{config.json, metrics.jsonl, ckpt/, plots/}.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

import deit._torchvision_compat  # noqa: F401  (before timm)
from deit.config import DeiTConfig
from deit.data import Augmented, ImageData, TrainStream, build_datasets, build_transforms, eval_loader, train_sampler
from deit.eval.evaluate import evaluate
from deit.models import build_model
from sparse_core import SparseLinear
from sparse_core.train.checkpoint import CheckpointManager, gather_rng_states, restore, restore_rng_states
from sparse_core.train.config import config_to_dict, load_config, parse_cli
from sparse_core.train.distributed import (DistEnv, all_reduce_mean, barrier, distributed_session, no_sync_unless,
                                          wrap_ddp)
from sparse_core.train.metrics import build_logger, progress_bar
from sparse_core.train.plots import plot_metrics, plot_prefix
from sparse_core.train.resilience import RunGuard, run_main
from sparse_core.train.step import optimizer_step

__all__ = ["CONFIG_DIR", "DEFAULT_CONFIG", "TrainParts", "build_parts", "train", "main"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = "tiny"
PLOT_PANELS = {"loss": ["train/loss", "val/loss", "val/ema_loss"], "top1": ["val/top1", "val/ema_top1"],
               "top5": ["val/top5", "val/ema_top5"], "lr": ["train/lr"]}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sync_modes(ema_model: nn.Module, model: nn.Module) -> None:
    """The EMA copy follows the live model's sparse/dense switches (2by4 dense fine-tuning, STEP)."""
    live = {n: m.mode for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    for name, module in ema_model.named_modules():
        if name in live:
            module.mode = live[name]


def train(cfg: DeiTConfig) -> dict[str, float]:
    """Run (or resume) training as `cfg` says; returns the last evaluation's metrics and the step."""
    with distributed_session(cfg.device) as env:
        return _train(cfg, env)


@dataclass
class TrainParts:
    """What one training run is made of; `build_parts` makes it, `_train` and deit.eval.step_profile use it."""
    data: ImageData
    stream: TrainStream
    val_loader: Any
    steps_per_epoch: int
    total_steps: int  # what the schedule and the sparse method span
    model: nn.Module
    ctl: Any  # sparse_core.SparseController
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # timm ModelEmaV3 or None
    mixup: Any  # timm Mixup or None
    criterion: nn.Module
    autocast: Any  # bf16 autocast on CUDA, else a null context


def build_parts(cfg: DeiTConfig, env: DistEnv) -> TrainParts:
    """Data stream, model with its sparse controller, optimizer, schedule, EMA, mixup and loss, as `cfg` says."""
    device = env.device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.type == "cuda" and cfg.dtype == "bfloat16" else contextlib.nullcontext())

    # ---- data: timm transforms, a resumable stream of shuffled batches, the val shard ----------
    data = build_datasets(cfg.data)
    train_tf, eval_tf = build_transforms(cfg.data, cfg.aug)
    sampler = train_sampler(data.train, env.rank, env.world_size, cfg.seed, cfg.aug.repeated_aug)
    pin = device.type == "cuda"
    stream = TrainStream(Augmented(data.train, train_tf, cfg.seed), sampler, cfg.batch_size, env.rank,
                         cfg.data.num_workers, pin)
    val_loader = eval_loader(Augmented(data.val, eval_tf), cfg.batch_size, env.rank, env.world_size,
                             cfg.data.num_workers, pin)
    steps_per_epoch = stream.batches_per_epoch // cfg.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(f"one epoch has {stream.batches_per_epoch} micro-batches per rank, fewer than "
                         f"grad_accum={cfg.grad_accum}; lower batch_size or grad_accum")
    total_steps = cfg.optim.epochs * steps_per_epoch  # what the schedule and the sparse method span

    # ---- model (same init on every rank), sparse controller, optimizer, schedule, EMA ----------
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    _seed_everything(cfg.seed)
    model, ctl = build_model(cfg.model, cfg.data.img_size, data.num_classes, cfg.method, total_steps, cfg.sparse)
    model.to(device)
    opt_kwargs = {} if cfg.optim.betas is None else {"betas": tuple(cfg.optim.betas)}
    optimizer = create_optimizer_v2(model, opt=cfg.optim.opt, lr=cfg.optim.lr,
                                    weight_decay=cfg.optim.weight_decay, **opt_kwargs)
    ctl.bind_optimizer(optimizer)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=cfg.optim.epochs,
                                       warmup_epochs=cfg.optim.warmup_epochs, warmup_lr=cfg.optim.warmup_lr,
                                       min_lr=cfg.optim.min_lr, step_on_epochs=False,
                                       updates_per_epoch=steps_per_epoch)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    mixup = None
    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.aug.mixup, cutmix_alpha=cfg.aug.cutmix, prob=cfg.aug.mixup_prob,
                      switch_prob=cfg.aug.mixup_switch_prob, mode=cfg.aug.mixup_mode,
                      label_smoothing=cfg.aug.smoothing, num_classes=data.num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()  # mixup makes soft (smoothed) targets
    elif cfg.aug.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=cfg.aug.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()
    return TrainParts(data, stream, val_loader, steps_per_epoch, total_steps, model, ctl, optimizer, scheduler,
                      ema, mixup, criterion, autocast)


def _train(cfg: DeiTConfig, env: DistEnv) -> dict[str, float]:
    device = env.device
    run_dir = Path(cfg.out_dir) / cfg.run_name
    pin = device.type == "cuda"
    parts = build_parts(cfg, env)
    data, stream, val_loader, autocast = parts.data, parts.stream, parts.val_loader, parts.autocast
    model, ctl, optimizer, scheduler = parts.model, parts.ctl, parts.optimizer, parts.scheduler
    ema, mixup, criterion, total_steps = parts.ema, parts.mixup, parts.criterion, parts.total_steps
    last_step = min(total_steps, cfg.max_steps or total_steps)
    ddp_model: nn.Module = model
    if env.world_size > 1:
        ddp_model = wrap_ddp(model, device)

    # ---- checkpoint state and resume -----------------------------------------------------------
    ckpt = CheckpointManager(run_dir / "ckpt", keep_last=cfg.keep_last)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "controller": ctl,
                             "data": stream, "config": config_to_dict(cfg),
                             "meta": {"num_classes": data.num_classes, "class_names": data.class_names,
                                      "world_size": env.world_size, "total_steps": total_steps}}
    if ema is not None:
        state["ema"] = ema

    def save(at: int) -> Path | None:
        """Checkpoint of `at` steps with every rank's RNG streams: every rank calls it, rank 0 writes."""
        rngs = gather_rng_states()  # a collective
        path = ckpt.save(at, {**state, "rng": rngs}) if env.is_main else None
        barrier()
        return path

    guard = RunGuard(save, max_bad_steps=cfg.max_bad_steps)
    guard.install(model, optimizer)  # fault-injection hooks of the tests; nothing unless SPARSE_CORE_FAULT is set
    state["guard"] = guard
    step = 0
    found = None
    if cfg.resume == "auto":
        found = ckpt.load_latest(map_location=device)
    elif cfg.resume != "never":
        found = ckpt.load(cfg.resume, map_location=device)
    else:
        ckpt.require_empty("resume=auto")
    _seed_everything(cfg.seed + env.rank)  # per-rank randomness (mixup, drop-path, MVUE) from here on
    if found is not None:
        step, loaded = found
        restore(state, loaded, optional=("guard",))  # checkpoints from before the guard existed lack it
        if int(loaded["meta"]["world_size"]) != env.world_size:
            warnings.warn(f"resuming a {loaded['meta']['world_size']}-rank run on {env.world_size} ranks: the "
                          "current epoch's sample order changes (some samples repeat or are skipped once)")
        restore_rng_states(loaded.get("rng"), env.rank, env.world_size, reseed=cfg.seed + env.rank * 1_000_003 + step)

    logger = build_logger(run_dir, cfg.wandb, cfg.wandb_project, cfg.run_name, config_to_dict(cfg), env.is_main)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
        print(f"{cfg.model.name} method={cfg.method} data={cfg.data.source} ({len(data.train)} train, "
              f"{len(data.val)} val, {data.num_classes} classes) world={env.world_size} device={device} "
              f"steps {step}->{last_step} of {total_steps}", flush=True)

    # ---- the loop ------------------------------------------------------------------------------
    result: dict[str, float] = {}
    bar = progress_bar(total=last_step, initial=step, enabled=env.is_main)
    t0, images_seen = time.perf_counter(), 0
    with guard:  # SIGTERM/SIGINT only set a flag; the loop stops at a step boundary
        while step < last_step:
            scheduler.step_update(num_updates=step)  # lr of this step (warm-up + cosine)
            model.train()
            guard.begin_step(step)
            loss_sum = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                x, y = stream.next()
                x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
                if mixup is not None:
                    x, y = mixup(x, y)
                with no_sync_unless(ddp_model, sync=micro == cfg.grad_accum - 1):  # DDP syncs the last one only
                    with autocast:
                        loss = guard.loss(criterion(ddp_model(x), y)) / cfg.grad_accum
                    loss.backward()
                loss_sum += loss.detach()
                images_seen += x.shape[0]
            result_step = optimizer_step(model, optimizer, controller=ctl, clip_norm=cfg.optim.clip_grad, step=step)
            guard.after_step(step, result_step, loss_sum)  # skipped steps counted; max_bad_steps in a row: save, stop
            if ema is not None:
                ema.update(model, step=step)
            step += 1
            bar.update(1)

            if step % cfg.log_interval == 0 or step == last_step:
                loss_value = float(all_reduce_mean(loss_sum))  # mean over ranks; .item() sync once per log interval
                elapsed = time.perf_counter() - t0
                metrics = {"train/loss": loss_value, "train/lr": optimizer.param_groups[0]["lr"],
                           "train/epoch": stream.epoch + stream.batch / stream.batches_per_epoch,
                           "train/images_per_s": images_seen * env.world_size / max(elapsed, 1e-9),
                           "train/skipped": float(result_step.skipped), **guard.metrics(), **ctl.metrics()}
                if result_step.grad_norm is not None:
                    metrics["train/grad_norm"] = result_step.grad_norm
                logger.log(metrics, step)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{metrics['train/lr']:.2e}")
                t0, images_seen = time.perf_counter(), 0

            t_aside = time.perf_counter()  # evaluation and checkpoints are not training time: left out of images/s
            if step % cfg.eval_interval == 0 or step == last_step:
                result = {f"val/{k}": v for k, v in evaluate(model, val_loader, device, autocast).items()}
                if ema is not None:
                    _sync_modes(ema.module, model)
                    ema_result = evaluate(ema.module, val_loader, device, autocast)
                    result.update({f"val/ema_{k}": v for k, v in ema_result.items()})
                logger.log(result, step)
                if env.is_main:
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))

            if step % cfg.ckpt_interval == 0 or step == last_step:
                save(step)
            t0 += time.perf_counter() - t_aside
            guard.stop_if_requested(step)  # SIGTERM/SIGINT: checkpoint, say how to resume, exit 0
    bar.close()
    logger.close()

    if env.is_main and (run_dir / "metrics.jsonl").exists():
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots", PLOT_PANELS)
        if ctl.layers:
            plot_prefix(run_dir / "metrics.jsonl", run_dir / "plots" / "flip_rate.png", "sparse/flip_rate")
    return {**result, "step": float(step)}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """CLI: `[--config-name NAME] key=value ...` (hydra override syntax); default config 'tiny'."""
    name, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    cfg = load_config(DeiTConfig, CONFIG_DIR, name or DEFAULT_CONFIG, overrides)
    return train(cfg)


if __name__ == "__main__":
    run_main(main)  # config errors, unusable checkpoints, a diverged run: one line, exit code 1
