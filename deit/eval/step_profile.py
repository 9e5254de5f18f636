"""Images/s of real DeiT training steps and the share of step time spent in the FFNs (blocks[i].mlp).

    python -m deit.eval.step_profile --config-name tiny method=2by4 --steps 20 --warmup 5 --out ffn.json
    python -m deit.eval.step_profile --config-name cifar10_subset data.path=... device=cuda method=dense \\
        profile.steps=20 profile.warmup=5 profile.out=dense.json

The run is built by deit.train's `build_parts` (data stream with its augmentation, model and sparse
controller, optimizer, schedule, mixup, loss) and each step makes the loop's calls: next batch, mixup,
forward + loss under bf16 autocast (CUDA), backward, `optimizer_step` (clip, ctl.before/after), EMA.
Not here: checkpoints, evaluation, logging, the non-finite guard, DDP (run it in one process).
`sparse_core.train.time_steps` gives the hook-free step time (images/s) and, from a second timed run
with hooks on every blocks[i].mlp, the FFN forward/backward ms and their share of that run's step time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from deit.config import DeiTConfig
from deit.train import CONFIG_DIR, DEFAULT_CONFIG, TrainParts, build_parts
from sparse_core import SparseLinear
from sparse_core.train.config import config_to_dict, load_config, parse_cli
from sparse_core.train.distributed import distributed_session
from sparse_core.train.profile import time_steps
from sparse_core.train.step import optimizer_step

__all__ = ["profile_steps", "main"]

PROFILE_KEYS = ("steps", "warmup", "out")  # `profile.<key>=value` on the command line, like a config override


def _step_fn(cfg: DeiTConfig, parts: TrainParts, device: torch.device, data_ms: list[float]) -> Any:
    """One optimizer step as deit.train's loop makes it; appends the ms spent waiting for batches to `data_ms`."""
    model, pin = parts.model, device.type == "cuda"
    step = 0

    def run() -> None:
        nonlocal step
        parts.scheduler.step_update(num_updates=step)
        model.train()
        waited = 0.0
        for _ in range(cfg.grad_accum):
            t0 = time.perf_counter()
            x, y = parts.stream.next()
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            waited += time.perf_counter() - t0
            if parts.mixup is not None:
                x, y = parts.mixup(x, y)
            with parts.autocast:
                loss = parts.criterion(model(x), y) / cfg.grad_accum
            loss.backward()
        optimizer_step(model, parts.optimizer, controller=parts.ctl, clip_norm=cfg.optim.clip_grad, step=step)
        if parts.ema is not None:
            parts.ema.update(model, step=step)
        data_ms.append(waited * 1e3)
        step += 1

    return run


def profile_steps(cfg: DeiTConfig, warmup: int = 5, steps: int = 20) -> dict[str, Any]:
    """Time `warmup` + 2 x `steps` training steps of `cfg` (see the module doc); the result as a JSON-able dict."""
    with distributed_session(cfg.device) as env:
        if env.world_size > 1:
            raise ValueError(f"step_profile runs in one process; got WORLD_SIZE={env.world_size} (no torchrun)")
        parts = build_parts(cfg, env)
        blocks = getattr(parts.model, "blocks", None)
        if not blocks or not all(hasattr(b, "mlp") for b in blocks):
            raise ValueError(f"model {cfg.model.name!r} has no blocks[i].mlp to time")
        data_ms: list[float] = []
        timed = time_steps(_step_fn(cfg, parts, env.device, data_ms), warmup, steps,
                           [("ffn", b.mlp) for b in blocks], env.device)
    ffn = timed["groups"]["ffn"]
    images = cfg.batch_size * cfg.grad_accum
    layers = [m for m in parts.model.modules() if isinstance(m, SparseLinear)]
    return {
        "method": cfg.method, "model": cfg.model.name, "embed_dim": blocks[0].mlp.fc1.in_features,
        "ffn_hidden": blocks[0].mlp.fc1.out_features, "depth": len(blocks),
        "tokens": parts.model.patch_embed.num_patches, "img_size": cfg.data.img_size, "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum, "images_per_s": images / (timed["step_ms"] / 1e3),
        "step_ms": timed["step_ms"], "step_ms_hooked": timed["step_ms_hooked"],
        "data_ms": sum(data_ms[warmup:warmup + steps]) / steps,  # CPU wait for the batch, in step_ms
        "ffn_forward_ms": ffn["forward_ms"], "ffn_backward_ms": ffn["backward_ms"], "ffn_ms": ffn["total_ms"],
        "ffn_share": ffn["share"],  # of step_ms_hooked
        "sparse_layers": sum(m.mode == "sparse" for m in layers),
        "backends": sorted({m.backend.name for m in layers}),
        "warmup": warmup, "steps": steps, "device": str(env.device),
        "gpu": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": config_to_dict(cfg),
    }


def _split_profile_keys(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Pull `profile.steps=20`-style tokens out of the hydra overrides."""
    found, rest = {}, []
    for arg in args:
        if arg.startswith("profile."):
            key, sep, value = arg[len("profile."):].partition("=")
            if key not in PROFILE_KEYS or not sep:
                raise ValueError(f"{arg!r}: give profile.<key>=value with key one of {PROFILE_KEYS}")
            found[key] = value
        else:
            rest.append(arg)
    return found, rest


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: `[--config-name NAME] key=value ... [--steps N --warmup N --out FILE]`; prints the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--steps", type=int, default=20, help="timed steps (twice: without, then with hooks)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    extra, rest = _split_profile_keys(rest)
    try:
        steps, warmup = int(extra.get("steps", args.steps)), int(extra.get("warmup", args.warmup))
    except ValueError:
        raise ValueError(f"profile.steps and profile.warmup must be integers, got {extra}") from None
    out = Path(extra["out"]) if "out" in extra else args.out
    name, overrides = parse_cli(rest)
    cfg = load_config(DeiTConfig, CONFIG_DIR, name or DEFAULT_CONFIG, overrides)
    result = profile_steps(cfg, warmup, steps)
    result["command"] = "python -m deit.eval.step_profile " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
