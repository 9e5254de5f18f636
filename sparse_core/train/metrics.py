"""One logger interface, `log(metrics, step)`, with JSONL and W&B (offline by default) behind it.

    logger = build_logger(out_dir, "offline", "sparse-nanogpt", run_name, config_to_dict(cfg), env.is_main)
    logger.log({"train/loss": loss, **ctl.metrics()}, step)
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "MetricLogger", "JsonlLogger", "WandbLogger", "FanoutLogger", "NullLogger",
    "build_logger", "progress_bar", "read_jsonl", "series", "WANDB_MODES",
]

WANDB_MODES = ("offline", "online", "disabled")
_warned_no_wandb = False


@runtime_checkable
class MetricLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def _as_float(key: str, value: Any) -> float:
    """A float from a Python/numpy number or a one-element tensor; TypeError naming the key otherwise."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())  # syncs a CUDA tensor
    raise TypeError(f"metric {key!r} must be a number or one-element tensor, got {type(value).__name__}")


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")


class NullLogger:
    """Logs nothing (non-main ranks, or logging disabled)."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger:
    """One JSON object per line, `{"step": ..., **metrics}`, flushed each call; appends on resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        self._file = open(self.path, "a", encoding="utf-8")
        if torn:  # a crash cut the last line: start ours on a fresh line
            self._file.write("\n")

    def log(self, metrics: dict[str, float], step: int) -> None:
        _check_step(step)
        if "step" in metrics:
            raise ValueError("metrics must not contain the key 'step'; pass it as the step argument")
        record = {"step": step, **{k: _as_float(k, v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class WandbLogger:
    """Weights & Biases run (wandb imported lazily); `mode` 'offline' writes under `dir` for a later sync."""

    def __init__(self, project: str, run_name: str, config: dict[str, Any], mode: str = "offline",
                 dir: str | Path | None = None) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
        try:
            import wandb
        except ImportError as e:
            if mode == "disabled":
                self._run = None
                return
            raise ImportError(f"wandb mode {mode!r} needs the wandb package: pip install wandb "
                              "(or use wandb mode 'disabled')") from e
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=run_name, config=config, mode=mode,
                               dir=None if dir is None else str(dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        _check_step(step)
        if self._run is not None:
            self._run.log({k: _as_float(k, v) for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class FanoutLogger:
    """Sends every call to each of `loggers`."""

    def __init__(self, *loggers: MetricLogger) -> None:
        for lg in loggers:
            if not isinstance(lg, MetricLogger):
                raise TypeError(f"{lg!r} has no log(metrics, step)/close()")
        self.loggers = loggers

    def log(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def build_logger(out_dir: str | Path, wandb_mode: str, project: str, run_name: str, config: dict[str, Any],
                 enabled: bool) -> MetricLogger:
    """`out_dir/metrics.jsonl` plus W&B unless disabled; a NullLogger when not `enabled` (non-main ranks).

    Offline W&B without wandb installed warns once and logs JSONL only; online without it raises.
    """
    global _warned_no_wandb
    if wandb_mode not in WANDB_MODES:
        raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {wandb_mode!r}")
    if not enabled:
        return NullLogger()
    out_dir = Path(out_dir)
    jsonl = JsonlLogger(out_dir / "metrics.jsonl")
    if wandb_mode == "disabled":
        return jsonl
    try:
        wb = WandbLogger(project, run_name, config, mode=wandb_mode, dir=out_dir)
    except ImportError:
        if wandb_mode == "online":
            jsonl.close()
            raise
        if not _warned_no_wandb:
            warnings.warn("wandb is not installed; logging to metrics.jsonl only (pip install wandb to add it)")
            _warned_no_wandb = True
        return jsonl
    return FanoutLogger(jsonl, wb)


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str | None = None) -> Any:
    """A tqdm bar from `initial` to `total` (hidden when not `enabled`, e.g. on non-main ranks)."""
    from tqdm import tqdm

    if initial < 0 or total < initial:
        raise ValueError(f"progress bar needs 0 <= initial <= total, got initial={initial}, total={total}")
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL metrics file; a torn line (crash mid-write) is skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {str(path)!r} does not exist")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{lineno}: skipping an unreadable line")
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                warnings.warn(f"{path}:{lineno}: skipping a line that is not an object with 'step'")
                continue
            records.append(rec)
    return records


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key`, sorted by step; a step logged twice (resume) keeps its last value."""
    by_step: dict[int, float] = {}
    for rec in records:
        v = rec.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
            by_step[int(rec["step"])] = float(v)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]
