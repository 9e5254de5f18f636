"""Share of a training step spent inside chosen modules (e.g. the FFNs), timed from module hooks.

    with ModuleTimer([("ffn", block.mlp) for block in model.blocks]) as timer:
        for _ in range(n): train_step()
    timer.summary(step_ms_total=wall_ms, steps=n)   # {'groups': {'ffn': {'forward_ms', 'backward_ms', 'share'...}}}

    time_steps(train_step, n_warmup=5, n_steps=20, modules=[("ffn", b.mlp) for b in model.blocks])

Forward: a forward pre-hook and a forward hook bracket each call. Backward: a full backward pre-hook
(grads w.r.t. the outputs are ready) and a full backward hook (grads w.r.t. the inputs are done). On CUDA
the brackets are CUDA events on the current stream, read once at `summary`; on CPU `time.perf_counter`.
On one CUDA stream an event pair measures whatever the GPU ran between the two records: for the backward
that is everything the autograd engine launched between the two hooks, which in a sequential block
(timm's Block, a transformer layer) is the module's own backward. Hooks do not fire inside CUDA graphs
or compiled regions, so time eager models.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

__all__ = ["ModuleTimer", "time_steps"]


class _Clock:
    """Time stamps and their pairwise differences: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()  # the current stream: in the backward pass the engine sets it to the op's stream
        return event

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def _module_device(modules: Sequence[nn.Module]) -> torch.device:
    devices = {t.device for m in modules for t in [*m.parameters(), *m.buffers()]}
    if len(devices) > 1:
        raise ValueError(f"the timed modules sit on several devices {sorted(map(str, devices))}; give device=")
    return devices.pop() if devices else torch.device("cpu")


class ModuleTimer:
    """Accumulate forward and backward time of (group name, module) pairs while active (a context manager).

    Several modules may share a group name (all FFNs of a model as 'ffn'); a module may appear once, and
    none may hold another (their times would be counted twice). In a grad-enabled forward a timed module
    needs an input that requires grad, else its backward cannot be bracketed: that is a ValueError.
    """

    def __init__(self, modules: Sequence[tuple[str, nn.Module]], device: torch.device | str | None = None) -> None:
        if isinstance(modules, (str, nn.Module)) or not isinstance(modules, Sequence) or not modules:
            raise ValueError(f"modules must be a non-empty list of (name, nn.Module) pairs, got {modules!r}")
        for item in modules:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0]
                    and isinstance(item[1], nn.Module)):
                raise TypeError(f"each entry of modules must be a (non-empty name, nn.Module) pair, got {item!r}")
        ids = [id(m) for _, m in modules]
        if len(set(ids)) != len(ids):
            raise ValueError("a module appears twice in modules; each may be timed once")
        for name, module in modules:
            inner = {id(sub) for sub in module.modules() if sub is not module}
            nested = [other for other, m in modules if id(m) in inner]
            if nested:
                raise ValueError(f"module {name!r} contains the timed module(s) {nested}; their time would count twice")
        self.modules = list(modules)
        self.device = torch.device(device) if device is not None else _module_device([m for _, m in modules])
        self.clock = _Clock(self.device)
        self._pairs: dict[str, dict[str, list[tuple[Any, Any]]]] = defaultdict(lambda: {"forward": [], "backward": []})
        self._open: dict[tuple[int, str], list[Any]] = defaultdict(list)  # (module id, pass) -> starts (a stack)
        self._handles: list[Any] = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "ModuleTimer":
        if self.active:
            raise RuntimeError("ModuleTimer is already active; it cannot be entered twice at once")
        for name, module in self.modules:
            self._handles += [
                module.register_forward_pre_hook(self._forward_start(name, module)),
                module.register_forward_hook(self._stop(name, module, "forward")),
                module.register_full_backward_pre_hook(self._start(module, "backward")),
                module.register_full_backward_hook(self._stop(name, module, "backward")),
            ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open.clear()  # a step interrupted between two hooks leaves an unmatched start

    def _forward_start(self, name: str, module: nn.Module) -> Callable[..., None]:
        start = self._start(module, "forward")

        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            if torch.is_grad_enabled() and not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                raise ValueError(f"timed module {name!r} ({type(mod).__name__}) got no positional input that "
                                 "requires grad: its full backward hook would fire before its backward ran; "
                                 "time a module inside the network, or give the input requires_grad=True")
            start(mod)

        return hook

    def _start(self, module: nn.Module, kind: str) -> Callable[..., None]:
        def hook(mod: nn.Module, *_: Any) -> None:
            self._open[(id(module), kind)].append(self.clock.now())

        return hook

    def _stop(self, name: str, module: nn.Module, kind: str) -> Callable[..., None]:
        def hook(mod: nn.Module, *_: Any) -> None:
            starts = self._open[(id(module), kind)]
            if starts:  # none when the timer was entered between this module's two hooks
                self._pairs[name][kind].append((starts.pop(), self.clock.now()))

        return hook

    def summary(self, step_ms_total: float, steps: int = 1) -> dict[str, Any]:
        """Per group: forward/backward/total ms (divided by `steps`), calls, share of `step_ms_total`."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if isinstance(step_ms_total, bool) or not isinstance(step_ms_total, (int, float)) or not step_ms_total > 0:
            raise ValueError(f"step_ms_total must be a positive number of milliseconds, got {step_ms_total!r}")
        if not self._pairs:
            raise RuntimeError("ModuleTimer measured nothing: run forward/backward inside `with timer:` first")
        if self.clock.cuda:
            torch.cuda.synchronize(self.device)  # every recorded event has happened
        groups: dict[str, dict[str, float]] = {}
        for name, kinds in self._pairs.items():
            fwd, bwd = (sum(self.clock.elapsed_ms(a, b) for a, b in kinds[k]) for k in ("forward", "backward"))
            groups[name] = {"forward_ms": fwd / steps, "backward_ms": bwd / steps, "total_ms": (fwd + bwd) / steps,
                            "forward_calls": len(kinds["forward"]), "backward_calls": len(kinds["backward"]),
                            "share": (fwd + bwd) / step_ms_total}
        inside = sum(g["total_ms"] for g in groups.values()) * steps
        if inside > step_ms_total * 1.01:
            raise ValueError(f"step_ms_total={step_ms_total:.3f} is less than the {inside:.3f} ms measured inside the "
                             "modules; pass the wall time of all the steps the timer was active for")
        return {"step_ms": step_ms_total / steps, "steps": steps, "groups": groups}


def _wall_ms(step_fn: Callable[[], Any], n: int, device: torch.device) -> float:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step_fn()
    if cuda:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def time_steps(step_fn: Callable[[], Any], n_warmup: int, n_steps: int, modules: Sequence[tuple[str, nn.Module]],
               device: torch.device | str | None = None) -> dict[str, Any]:
    """Time `step_fn` (one whole training step): warm-up, `n_steps` without hooks, `n_steps` with the timer.

    'step_ms' is the hook-free mean (for images/s); each group's ms and share come from the timed run,
    whose own mean step is 'step_ms_hooked' (hooks add a little work); wall time, synchronized on CUDA.
    """
    for key, value, low in (("n_warmup", n_warmup, 0), ("n_steps", n_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {step_fn!r}")
    timer = ModuleTimer(modules, device)
    for _ in range(n_warmup):
        step_fn()
    plain_ms = _wall_ms(step_fn, n_steps, timer.device)
    with timer:
        hooked_ms = _wall_ms(step_fn, n_steps, timer.device)
    result = timer.summary(hooked_ms, steps=n_steps)
    return {"step_ms": plain_ms / n_steps, "step_ms_hooked": result["step_ms"], "warmup": n_warmup,
            "steps": n_steps, "device": str(timer.device), "groups": result["groups"]}
