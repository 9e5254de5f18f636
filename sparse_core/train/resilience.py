"""Fault tolerance for the training loops: pre-emption (SIGTERM/SIGINT -> checkpoint -> clean exit) and a
guard that stops a run whose steps keep coming out non-finite.

    guard = NonFiniteGuard(max_consecutive=20)
    state["guard"] = guard                          # Stateful: the counts survive resume
    with PreemptionHandler() as preempt:
        for step in range(start, end):
            ...                                     # forward, backward
            result = optimizer_step(model, opt, controller=ctl, scaler=scaler, clip_norm=clip, step=step)
            try:
                guard.update(step, skipped=result.skipped, loss=loss, grad_norm=result.grad_norm)
            except TrainingDiverged:
                save(step + 1)                      # the recipe's own save (rank 0 writes, every rank joins)
                raise
            preempt.stop_if_requested(step + 1, lambda: save(step + 1))   # saves and exits 0 when signalled

Under torch.distributed, `should_stop`, `stop_if_requested` and `loss_is_finite` are collectives (one
tiny all-reduce): every rank calls them at the same point, and every rank gets the same answer.

The recipes use `RunGuard`, which bundles both with the fault-injection hooks of the tests
(sparse_core.train.faults, off unless SPARSE_CORE_FAULT is set):

    guard = RunGuard(save, max_bad_steps=K)          # save(step) -> checkpoint path (rank 0) or None
    guard.install(model, optimizer)                   # fault hooks; nothing when no fault is asked for
    state["guard"] = guard                            # Stateful: the skip counts survive resume
    with guard:                                       # SIGTERM/SIGINT handlers
        for step in range(start, end):
            guard.begin_step(step)
            loss = guard.loss(model(x, y))            # identity unless a nan_loss fault is injected
            ...                                       # backward
            result = optimizer_step(...)
            guard.after_step(step, result, loss)      # K bad steps in a row: save, raise TrainingDiverged
            ...                                       # log (guard.metrics()), evaluate, periodic checkpoint
            guard.stop_if_requested(step + 1)         # signalled: save, print how to resume, exit 0
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Any, Callable, NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn

from sparse_core.train.checkpoint import CheckpointError
from sparse_core.train.config import ConfigError
from sparse_core.train.faults import FaultInjector

__all__ = ["PreemptionHandler", "Preempted", "exit_preempted", "any_rank", "NonFiniteGuard", "TrainingDiverged",
           "loss_is_finite", "RESUME_HINT", "RunGuard", "run_main"]

RESUME_HINT = "resume with the same command plus resume=auto"


def _is_main_rank() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on any rank (an all-reduce under torch.distributed; `flag` itself otherwise)."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())  # .item() sync


# ---- pre-emption ------------------------------------------------------------------------------------------


class Preempted(SystemExit):
    """Raised by `exit_preempted` after the checkpoint is written; exits the process with `code` (0)."""

    def __init__(self, step: int, path: Path | None, code: int = 0) -> None:
        super().__init__(code)
        self.step, self.path = step, path


def exit_preempted(step: int, path: str | Path | None, *, signal_name: str = "a signal", hint: str = RESUME_HINT,
                   code: int = 0) -> NoReturn:
    """Print where the pre-emption checkpoint is and how to resume (main rank), then raise Preempted(code)."""
    path = None if path is None else Path(path)
    if _is_main_rank():
        where = f"checkpoint {path}" if path is not None else "no checkpoint path reported"
        print(f"pre-empted by {signal_name} at step {step}; {where}; {hint}", file=sys.stderr, flush=True)
    raise Preempted(step, path, code)


class PreemptionHandler:
    """Context manager whose SIGTERM/SIGINT handlers only set a flag, so the loop stops at a step boundary.

    A second signal while the checkpoint is written changes nothing (the save finishes). The previous
    handlers come back on exit. Outside the main thread (where Python cannot install handlers) it warns
    and does nothing: `requested` stays False.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        if not signals:
            raise ValueError("signals must name at least one signal, e.g. (signal.SIGTERM,)")
        self.signals = tuple(signal.Signals(s) for s in signals)  # ValueError names an unknown number
        self._previous: dict[signal.Signals, Any] = {}
        self._received: signal.Signals | None = None
        self.count = 0  # signals received while installed

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:  # keep the first: it is what the message reports
            self._received = signal.Signals(signum)
        self.count += 1

    def __enter__(self) -> PreemptionHandler:
        if self._previous:
            raise RuntimeError("PreemptionHandler is already installed; use one `with` block")
        if threading.current_thread() is not threading.main_thread():
            warnings.warn("PreemptionHandler: not in the main thread, so no signal handler is installed; "
                          "pre-emption will not checkpoint")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """True once one of the signals arrived in this process."""
        return self._received is not None

    @property
    def signal_name(self) -> str | None:
        return None if self._received is None else self._received.name

    def should_stop(self) -> bool:
        """True when any rank was signalled (collective under torch.distributed: call it on every rank)."""
        return any_rank(self.requested)

    def stop_if_requested(self, step: int, save: Callable[[], str | Path | None], *, hint: str = RESUME_HINT,
                          code: int = 0) -> None:
        """If any rank was signalled: `save()` (every rank calls it; returns the path on rank 0), print the
        resume message and raise Preempted(code). `step` = optimizer steps done (the checkpoint's step)."""
        if not self.should_stop():
            return
        path = save()
        exit_preempted(step, path, signal_name=self.signal_name or "a signal on another rank", hint=hint, code=code)


# ---- non-finite steps -------------------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """Too many optimizer steps in a row were skipped for non-finite loss or gradients."""


def loss_is_finite(loss: torch.Tensor) -> bool:
    """True when every element of `loss` is finite on every rank (one sync; collective under torch.distributed)."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss must be a tensor, got {type(loss).__name__}")
    return not any_rank(not bool(torch.isfinite(loss.detach()).all()))  # .item() sync


def _as_float(value: float | torch.Tensor | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().sum())  # .item() sync; only on skipped steps
    return float(value)


class NonFiniteGuard:
    """Counts skipped (non-finite) steps, in total and in a row; raises TrainingDiverged after
    `max_consecutive` in a row. Stateful, so put it in the checkpoint state."""

    _SHOWN = 5  # bad steps quoted in the error message

    def __init__(self, max_consecutive: int = 20) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f"max_consecutive must be an int >= 1, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.total = 0
        self.consecutive = 0
        self._streak: list[tuple[int, float | None, float | None]] = []  # (step, loss, grad norm), newest last

    def update(self, step: int, *, skipped: bool, loss: float | torch.Tensor | None = None,
               grad_norm: float | None = None) -> None:
        """Record one step (`skipped`: the update was not applied). `loss` is read only on skipped steps."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if not skipped:
            self.consecutive = 0
            self._streak.clear()
            return
        self.total += 1
        self.consecutive += 1
        self._streak = (self._streak + [(step, _as_float(loss), grad_norm)])[-self._SHOWN:]
        if self.consecutive < self.max_consecutive:
            return
        first = step - self.consecutive + 1
        quoted = ", ".join(f"step {s}: loss {_fmt(l)}, grad norm {_fmt(g)}" for s, l, g in self._streak)
        message = (f"training diverged: {self.consecutive} optimizer steps in a row (steps {first}..{step}) were "
                   f"skipped for a non-finite loss or gradients ({self.total} skipped in total). Last ones: "
                   f"{quoted}. Try a lower learning rate or more warm-up, check the data of these steps, and with "
                   "fp16 check the GradScaler (or train in bf16). The weights were not updated by skipped steps.")
        self.consecutive = 0  # a run resumed from the checkpoint written now gets a fresh allowance
        self._streak.clear()
        raise TrainingDiverged(message)

    def metrics(self) -> dict[str, float]:
        return {"train/skipped_steps": float(self.total), "train/consecutive_skipped": float(self.consecutive)}

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        for key in ("total", "consecutive"):
            value = sd.get(key) if isinstance(sd, dict) else None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"NonFiniteGuard state needs an int >= 0 under {key!r}, got {sd!r}")
        self.total, self.consecutive = sd["total"], sd["consecutive"]
        self._streak.clear()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.4g}" if math.isfinite(value) else str(value))


# ---- the recipes' glue ------------------------------------------------------------------------------------


class RunGuard:
    """Pre-emption, the non-finite guard and the fault hooks of one training loop (see the module docstring).

    `save(step)` writes the checkpoint of `step` optimizer steps (every rank calls it; rank 0 writes and
    returns the path, the others None). Stateful: `state_dict` holds the skip counts.
    """

    def __init__(self, save: Callable[[int], str | Path | None], *, max_bad_steps: int = 20,
                 hint: str = RESUME_HINT) -> None:
        if not callable(save):
            raise TypeError(f"save must be a callable save(step) -> path, got {save!r}")
        self.save, self.hint = save, hint
        self.nonfinite = NonFiniteGuard(max_bad_steps)  # ValueError names a bad max_bad_steps
        self.preempt = PreemptionHandler()
        self.faults = FaultInjector()  # ValueError names a malformed SPARSE_CORE_FAULT

    def __enter__(self) -> RunGuard:
        self.preempt.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.preempt.__exit__(*exc)

    def install(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Fault hooks on the bare model and the optimizer; nothing unless SPARSE_CORE_FAULT is set."""
        self.faults.install(model, optimizer)

    def begin_step(self, step: int) -> None:
        self.faults.begin_step(step)

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` itself (made NaN when the tests inject a nan_loss fault at this step)."""
        return self.faults.loss(loss)

    def after_step(self, step: int, result: Any, loss: torch.Tensor | float | None = None) -> None:
        """Count a skipped step (`result`: optimizer_step's StepResult); after max_bad_steps in a row, save
        the checkpoint of step + 1 (the weights of the last good step) and raise TrainingDiverged."""
        try:
            self.nonfinite.update(step, skipped=result.skipped, loss=loss, grad_norm=result.grad_norm)
        except TrainingDiverged as e:
            path = self.save(step + 1)
            where = f"checkpoint {path}" if path is not None else "a checkpoint"
            raise TrainingDiverged(f"{e} The run stopped with {where} of step {step + 1}; after fixing the cause, "
                                   f"{self.hint}.") from None

    def stop_if_requested(self, step: int) -> None:
        """If SIGTERM/SIGINT arrived (on any rank): save(step), print how to resume, exit 0 (Preempted)."""
        self.preempt.stop_if_requested(step, lambda: self.save(step), hint=self.hint)

    def metrics(self) -> dict[str, float]:
        return self.nonfinite.metrics()

    def state_dict(self) -> dict[str, int]:
        return self.nonfinite.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.nonfinite.load_state_dict(sd)


def run_main(main: Callable[[], Any]) -> None:
    """Run a recipe's CLI `main()`: a config error, an unusable checkpoint or a diverged run ends the
    process with a one-line message and exit code 1 instead of a traceback."""
    try:
        main()
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except CheckpointError as e:
        sys.exit(f"checkpoint error: {e}")
    except TrainingDiverged as e:
        sys.exit(f"training stopped: {e}")
