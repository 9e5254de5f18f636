"""Pre-train GPT-2 with any sparse_core method; one process, or DDP under torchrun.

    python -m nanogpt.train --config-name tiny                          # CPU, a few minutes
    python -m nanogpt.train --config-name 124M method=2by4 data.dir=out/data/openwebtext
    torchrun --standalone --nproc_per_node=8 -m nanogpt.train --config-name 124M method=ste

One step: lr from warm-up + cosine; grad_accum micro-batches (forward under autocast, backward,
DDP syncing only on the last); then `optimizer_step`: unscale, clip, ctl.before_optimizer_step
(masked decay), AdamW step, ctl.after_optimizer_step (mask refresh, flip rate, lambda rule, dense
switch). Every checkpoint holds model, optimizer, scaler, controller, data position and every
process's RNG, so `resume=auto` continues bit-exactly. A `RunGuard` skips and counts non-finite steps
(stopping with a checkpoint after train.max_bad_steps in a row) and turns SIGTERM/SIGINT into a
checkpoint and a clean exit (exit code 0, with the command to resume). With train.cuda_graph=true each
micro-batch's forward+backward is replayed from a CUDA graph (captured on the first micro-batch, again
after the dense switch), which removes the per-call host cost of the sparse GEMMs and of every other op;
there a resumed run is not bit-exact (the capture's warm-up passes draw random numbers at the step where
they happen) and test faults injected into the loss (SPARSE_CORE_FAULT=nan_loss) do not reach the graph.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import sparse_core
from nanogpt.config import CONFIG_DIR, TrainConfig
from nanogpt.data.loader import TokenBatches, read_meta
from nanogpt.model import GPT, GPTConfig
from sparse_core.graphs import GraphedStep
from sparse_core.train import (
    CheckpointError, CheckpointManager, ConfigError, RunGuard, all_reduce_mean, barrier, build_logger, config_to_dict,
    decay_param_groups, distributed_session, gather_rng_states, load_config, no_sync_unless, optimizer_step,
    parse_cli, plot_metrics, plot_prefix, progress_bar, restore, restore_rng_states, run_main, set_lr,
    warmup_cosine_lr, wrap_ddp,
)

__all__ = ["train", "build_model", "model_args", "main"]


def model_args(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """GPTConfig of a run: the vocab padded to a multiple of 64, the FFN width the method asks for."""
    m = cfg.model
    return GPTConfig(block_size=m.block_size, vocab_size=(vocab_size + 63) // 64 * 64, n_layer=m.n_layer,
                     n_head=m.n_head, n_embd=m.n_embd, ffn_hidden=sparse_core.ffn_hidden_dim(4 * m.n_embd, cfg.method),
                     dropout=m.dropout, bias=m.bias)


def build_model(args: GPTConfig, method: str, max_steps: int, sparse_options: dict[str, Any],
                device: torch.device | str = "cpu") -> tuple[GPT, sparse_core.SparseController]:
    """The GPT on `device` with its FFN linears swapped by `sparsify` for `method`, and the controller."""
    model = GPT(args).to(device)
    if method in ("dense", "half"):
        sparse_options = {k: v for k, v in sparse_options.items() if k == "backend"}
    ctl = sparse_core.sparsify(model, method=method, total_steps=max_steps, **sparse_options)
    return model, ctl


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list, autocast: Any, device: torch.device) -> float:
    """Mean loss over `batches` and over all processes."""
    model.eval()
    total = torch.zeros(2, device=device)  # (loss sum, batch count)
    for x, y in batches:
        with autocast:
            _, loss = model(x, y)
        total += torch.stack([loss.float(), torch.ones((), device=device)])
    model.train()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return float(total[0] / total[1])  # .item() sync


def _micro_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: Any, n_micro: int) -> torch.Tensor:
    """Forward + backward of one micro-batch (the part train.cuda_graph captures); its detached loss share."""
    with autocast:
        _, loss = model(x, y)
    loss = loss / n_micro
    loss.backward()
    return loss.detach()


def _resume(cfg: TrainConfig, ckpt: CheckpointManager, state: dict[str, Any], args: dict[str, Any], env: Any) -> int:
    """Restore `state` and this process's RNG from the checkpoint `cfg.resume` selects; the step to start at."""
    if cfg.resume == "never":
        ckpt.require_empty("resume=auto")
        return 0
    found = ckpt.load_latest() if cfg.resume == "auto" else ckpt.load(cfg.resume)
    if found is None:
        return 0
    start, loaded = found
    if loaded.get("model_args") != args or loaded.get("method") != cfg.method:
        raise CheckpointError(f"checkpoint at step {start} in {ckpt.directory} is a {loaded.get('method')} model "
                              f"{loaded.get('model_args')}, this run a {cfg.method} model {args}")
    restore(state, loaded, optional=("guard",))  # checkpoints from before the guard existed lack it
    restore_rng_states(loaded.get("rng"), env.rank, env.world_size, reseed=cfg.seed + 1 + env.rank + 7919 * start)
    return start


def _plot(run_dir: Path, sparse: bool) -> None:
    """PNG plots of metrics.jsonl: losses, lr, throughput, and flip rates (overall and per layer)."""
    jsonl = run_dir / "metrics.jsonl"
    panels = {"loss": ["train/loss", "val/loss"], "lr": ["train/lr"], "throughput": ["train/tokens_per_s"]}
    if sparse:
        panels["flip_rate"] = ["sparse/flip_rate"]
    plot_metrics(jsonl, run_dir / "plots", panels)
    if sparse:
        plot_prefix(jsonl, run_dir / "plots" / "flip_rate_per_layer.png", "sparse/flip_rate/")


def train(cfg: TrainConfig) -> dict[str, float]:
    """Run (or continue) the training `cfg` describes; returns the last logged metrics."""
    with distributed_session(cfg.device) as env:
        return _train(cfg, env)


def _train(cfg: TrainConfig, env: Any) -> dict[str, float]:
    t, device, cuda = cfg.train, env.device, env.device.type == "cuda"
    run_dir = cfg.run_dir
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[t.dtype] if cuda else None
    autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()

    # ---- data, model, controller, optimizer ----------------------------------------------------------------
    meta = read_meta(cfg.data.dir)
    data_args = (cfg.model.block_size, cfg.data.batch_size, t.grad_accum, cfg.seed, env.rank, env.world_size, device)
    train_data = TokenBatches(Path(cfg.data.dir) / "train.bin", *data_args)
    val_batches = TokenBatches(Path(cfg.data.dir) / "val.bin", *data_args).fixed_batches(t.eval_iters)

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    args = model_args(cfg, meta["vocab_size"])
    raw_model, ctl = build_model(args, cfg.method, t.max_steps, cfg.sparse.options(), device)
    torch.manual_seed(cfg.seed + 1 + env.rank)  # then an own stream per process (MVUE draws, dropout)
    optimizer = torch.optim.AdamW(decay_param_groups(raw_model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2),
                                  fused=cuda)
    ctl.bind_optimizer(optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    # ---- checkpoints, guard, resume ----------------------------------------------------------------------------
    ckpt = CheckpointManager(run_dir / "ckpt", keep_last=t.keep_last)

    def save(done: int) -> Path | None:
        rngs = gather_rng_states()  # every process takes part
        path = None
        if env.is_main:
            path = ckpt.save(done, {**state, "rng": rngs, "model_args": asdict(args), "method": cfg.method,
                                    "config": config_to_dict(cfg), "meta": meta})
        barrier()
        return path

    guard = RunGuard(save, max_bad_steps=t.max_bad_steps)  # non-finite steps, SIGTERM/SIGINT, test faults
    guard.install(raw_model, optimizer)
    state = {"model": raw_model, "optimizer": optimizer, "scaler": scaler, "controller": ctl, "data": train_data,
             "guard": guard}
    start = _resume(cfg, ckpt, state, asdict(args), env)

    model: torch.nn.Module = raw_model
    if t.cuda_graph and (not cuda or env.world_size > 1):
        raise ConfigError(f"train.cuda_graph=true needs one CUDA process; this run has {env.world_size} process(es) "
                          f"on {device.type}")
    graphed: GraphedStep | None = None  # train.cuda_graph: the captured micro-step
    if t.compile:
        model = torch.compile(model)
    if env.world_size > 1:
        model = wrap_ddp(model, device)

    # ---- logging -------------------------------------------------------------------------------------------
    end = t.stop_at or t.max_steps
    logger = build_logger(run_dir, cfg.log.wandb, cfg.log.project, run_dir.name, config_to_dict(cfg), env.is_main)
    bar = progress_bar(t.max_steps, start, enabled=env.is_main and cfg.log.progress, desc=run_dir.name)
    if env.is_main:
        print(f"{run_dir.name}: {raw_model.num_params() / 1e6:.2f}M params, {ctl!r}, {env.world_size} process(es) "
              f"on {device}, {'resuming at step ' + str(start) if start else 'from scratch'}", file=sys.stderr)
    tokens_per_step = cfg.data.batch_size * cfg.model.block_size * t.grad_accum
    flops_per_token = 6 * raw_model.num_params() + 12 * args.n_layer * args.n_embd * args.block_size
    last: dict[str, float] = {}
    train_time, steps_since_log = 0.0, 0  # seconds spent in training steps since the last log line

    # ---- the loop ------------------------------------------------------------------------------------------
    with guard:  # SIGTERM/SIGINT only set a flag; the loop stops at a step boundary
        for step in range(start, end):
            t0 = time.perf_counter()
            lr = warmup_cosine_lr(step, base_lr=t.lr, warmup_steps=t.warmup_steps, total_steps=t.max_steps,
                                  min_lr=t.min_lr)
            set_lr(optimizer, lr)
            guard.begin_step(step)
            micro = train_data.next_step()
            loss_sum = torch.zeros((), device=device)
            for i, (x, y) in enumerate(micro):
                if t.cuda_graph:
                    if graphed is None or not graphed.matches_model():  # first batch, or after the dense switch
                        graphed = None  # free the old graph's memory pool before capturing the new one
                        torch.cuda.empty_cache()
                        graphed = GraphedStep(lambda xs, ys: _micro_step(raw_model, xs, ys, autocast, len(micro)),
                                              raw_model, (x, y))
                    loss_sum += graphed(x, y)
                    continue
                sync = i == len(micro) - 1  # DDP all-reduces gradients on the last micro-batch only
                with no_sync_unless(model, sync):
                    with autocast:
                        _, loss = model(x, y)
                    loss = guard.loss(loss) / len(micro)
                    scaler.scale(loss).backward()
                loss_sum += loss.detach()
            result = optimizer_step(raw_model, optimizer, controller=ctl, scaler=scaler,
                                    clip_norm=t.grad_clip or None, step=step, grads_to_none=not t.cuda_graph)
            guard.after_step(step, result, loss_sum)  # skipped steps counted; max_bad_steps in a row: save, stop
            train_time += time.perf_counter() - t0  # optimizer_step synced on the grad norm
            done = step + 1
            steps_since_log += 1
            bar.update(1)

            if done % t.log_interval == 0 or done == end:
                loss_val = float(all_reduce_mean(loss_sum))  # .item() sync
                tok_s = tokens_per_step * steps_since_log / train_time
                last = {"train/loss": loss_val, "train/lr": lr, "train/tokens_per_s": tok_s,
                        "train/tflops": flops_per_token * tok_s / 1e12, "train/tokens": done * tokens_per_step,
                        "train/skipped": float(result.skipped), **guard.metrics(), **ctl.metrics()}
                if result.grad_norm is not None:
                    last["train/grad_norm"] = result.grad_norm
                logger.log(last, done)
                post = {"loss": f"{loss_val:.4f}", "tok/s": f"{tok_s:,.0f}", "lr": f"{lr:.2e}"}
                if "sparse/flip_rate" in last:
                    post["flip"] = f"{last['sparse/flip_rate']:.2e}"
                bar.set_postfix(post, refresh=False)
                train_time, steps_since_log = 0.0, 0

            if done % t.eval_interval == 0 or done == t.max_steps:
                val = evaluate(model, val_batches, autocast, device)
                last.update({"val/loss": val, "val/ppl": math.exp(min(val, 50.0))})
                logger.log({"val/loss": val, "val/ppl": last["val/ppl"]}, done)
                if env.is_main:
                    bar.write(f"step {done}: val loss {val:.4f}")

            if done % t.ckpt_interval == 0 or done == end:
                save(done)
            guard.stop_if_requested(done)  # SIGTERM/SIGINT: checkpoint, say how to resume, exit 0

    bar.close()
    logger.close()
    if env.is_main and cfg.log.plots and (run_dir / "metrics.jsonl").is_file():
        _plot(run_dir, bool(ctl.layers))
    return last


def main(argv: list[str] | None = None) -> dict[str, float]:
    """CLI: `--config-name NAME` (default tiny) and hydra overrides such as `method=ste train.max_steps=50`."""
    name, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    cfg = load_config(TrainConfig, CONFIG_DIR, name or "tiny", overrides)
    return train(cfg)


if __name__ == "__main__":
    run_main(main)  # config errors, unusable checkpoints, a diverged run: one line, exit code 1
