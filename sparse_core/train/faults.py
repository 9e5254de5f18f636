"""Fault injection for the reliability tests; does nothing unless the environment variable is set.

    SPARSE_CORE_FAULT="nan_loss@3:2,kill_backward@7" python -m nanogpt.train ...

A comma-separated list of `KIND@STEP[:COUNT]`. STEP counts optimizer steps done before the step
(0-based, as in the loops); the fault hits steps STEP .. STEP+COUNT-1 (COUNT defaults to 1). Kinds:

    nan_loss          the step's training loss is multiplied by NaN (so are its gradients)
    kill_forward      SIGKILL itself in the step's first forward
    kill_backward     SIGKILL itself in the step's backward (when a parameter's gradient is computed)
    kill_optimizer    SIGKILL itself inside optimizer.step()
    sigterm, sigint   send itself that signal in the step's first forward (pre-emption)
    kill_checkpoint   SIGKILL itself half-way through writing checkpoint STEP (STEP = its step number)
    kill_manifest     SIGKILL itself after checkpoint STEP is renamed in, before the manifest lists it

Training loops get the step faults through `RunGuard` (sparse_core.train.resilience); the checkpoint
faults fire inside `CheckpointManager.save`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["ENV", "KINDS", "Fault", "parse_faults", "active_faults", "FaultInjector", "at_checkpoint_write"]

ENV = "SPARSE_CORE_FAULT"
_STEP_KINDS = ("nan_loss", "kill_forward", "kill_backward", "kill_optimizer", "sigterm", "sigint")
_CHECKPOINT_KINDS = ("kill_checkpoint", "kill_manifest")
KINDS = _STEP_KINDS + _CHECKPOINT_KINDS
_ITEM = re.compile(r"^([a-z_]+)@(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int
    count: int = 1

    def hits(self, step: int) -> bool:
        return self.step <= step < self.step + self.count


def parse_faults(text: str) -> tuple[Fault, ...]:
    """The faults of a `SPARSE_CORE_FAULT` value; ValueError names a malformed item or unknown kind."""
    faults = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        m = _ITEM.match(item)
        if not m or m.group(1) not in KINDS or (m.group(3) is not None and int(m.group(3)) < 1):
            raise ValueError(f"{ENV}: bad item {item!r}; expected KIND@STEP[:COUNT] (COUNT >= 1) with KIND one "
                             f"of {list(KINDS)}")
        faults.append(Fault(m.group(1), int(m.group(2)), int(m.group(3) or 1)))
    return tuple(faults)


def active_faults() -> tuple[Fault, ...]:
    """The faults the environment asks for (none when SPARSE_CORE_FAULT is unset or empty)."""
    return parse_faults(os.environ.get(ENV, ""))


def _announce(what: str) -> None:
    print(f"{ENV}: injecting {what}", file=sys.stderr, flush=True)


def _die(what: str) -> None:
    _announce(what)
    os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector:
    """The step faults of one training loop: hooks on the model and optimizer, and the NaN loss."""

    def __init__(self, faults: tuple[Fault, ...] | None = None) -> None:
        self.faults = tuple(f for f in (active_faults() if faults is None else faults) if f.kind in _STEP_KINDS)
        self.step = -1
        self._pending: set[str] = set()  # kinds still to fire in this step

    @property
    def enabled(self) -> bool:
        return bool(self.faults)

    def install(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Hook the forward, backward and optimizer step of `model`/`optimizer` (nothing when no fault is set)."""
        kinds = {f.kind for f in self.faults}
        if kinds & {"kill_forward", "sigterm", "sigint"}:
            model.register_forward_pre_hook(lambda module, args: self._fire("kill_forward", "sigterm", "sigint"))
        if "kill_backward" in kinds:
            param = next((p for p in model.parameters() if p.requires_grad), None)
            if param is None:
                raise ValueError("kill_backward needs a model with a trainable parameter")
            param.register_hook(lambda grad: self._fire("kill_backward"))
        if "kill_optimizer" in kinds:
            if optimizer is None:
                raise ValueError("kill_optimizer needs the optimizer passed to install()")
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._fire("kill_optimizer"))

    def begin_step(self, step: int) -> None:
        """Arm the faults of optimizer step `step` (0-based)."""
        self.step = step
        self._pending = {f.kind for f in self.faults if f.hits(step)}

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss`, times NaN when a nan_loss fault hits this step."""
        if "nan_loss" in self._pending:
            _announce(f"nan_loss at step {self.step}")
            return loss * float("nan")
        return loss

    def _fire(self, *kinds: str) -> None:
        for kind in kinds:
            if kind not in self._pending:
                continue
            self._pending.discard(kind)
            if kind.startswith("kill_"):
                _die(f"{kind} at step {self.step}")
            else:
                _announce(f"{kind} at step {self.step}")
                os.kill(os.getpid(), signal.SIGTERM if kind == "sigterm" else signal.SIGINT)


def at_checkpoint_write(step: int, stage: str, tmp: Path | None = None) -> None:
    """Called by CheckpointManager.save: `stage` 'file' (temp file written, before its rename; it is cut
    to half its size first) or 'manifest' (file renamed in, before the manifest update)."""
    if ENV not in os.environ:
        return
    kind = {"file": "kill_checkpoint", "manifest": "kill_manifest"}[stage]
    if any(f.kind == kind and f.hits(step) for f in active_faults()):
        if tmp is not None:
            os.truncate(tmp, os.path.getsize(tmp) // 2)  # a torn write
        _die(f"{kind} at checkpoint {step}")
