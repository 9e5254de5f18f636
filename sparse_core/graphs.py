"""CUDA-graph capture of a training micro-step (forward + backward), with SparseLinear plans kept live.

Eager `torch._cslt_sparse_mm` calls spend 0.4-0.7 ms each on the host (15-45 us through the plan-caching
extension, `backends.cslt_ext`); replaying a captured graph removes the host cost of every op of the step.
Usage (static shapes; in nanogpt: `train.cuda_graph=true`):

    step = GraphedStep(lambda x, y: loss_fn(model(x), y).backward(), model, (x0, y0))
    for x, y in batches:
        step(x, y)                     # copies into static inputs, refreshes plans, replays;
                                       # gradients accumulate in place (micro-batches add up)
        optimizer.step()               # grads are static tensors: never set them to None
        optimizer.zero_grad(set_to_none=False)

Before each replay every SparseLinear rebuilds its operands if its weight or mask changed (once per
optimizer step) and the new operands are copied into the buffers the graph was captured with.
Changing a layer's mode, backend, dtype or a product's sparse/dense choice needs a new capture
(`matches_model()` turns False).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from sparse_core.linear import SparseLinear

__all__ = ["GraphedStep", "copy_plan"]


def copy_plan(dst: Any, src: Any) -> None:
    """Copy the tensors of plan `src` into the same-shaped tensors of plan `dst` (same structure)."""
    if dst is src:
        return
    if isinstance(dst, torch.Tensor):
        if not isinstance(src, torch.Tensor) or src.shape != dst.shape or src.dtype != dst.dtype:
            raise RuntimeError("a SparseLinear plan changed shape or dtype since capture; capture the graph again")
        dst.copy_(src)
    elif dataclasses.is_dataclass(dst) and not isinstance(dst, type):
        if type(dst) is not type(src):
            raise RuntimeError(f"plan type changed from {type(dst).__name__} to {type(src).__name__}; capture again")
        for f in dataclasses.fields(dst):
            copy_plan(getattr(dst, f.name), getattr(src, f.name))
    elif isinstance(dst, (tuple, list)):
        if len(dst) != len(src):
            raise RuntimeError("plan structure changed since capture; capture the graph again")
        for d, s in zip(dst, src):
            copy_plan(d, s)
    elif dst != src:
        raise RuntimeError(f"plan setting changed since capture ({dst!r} -> {src!r}); capture the graph again")


def _same_constant(a: Any, b: Any) -> bool:
    """Whether a non-tensor graph input is unchanged: equal plain values (NaN equals NaN), and the very same tensors
    inside lists / tuples / dicts (those are captured by address, not copied)."""
    if a is b:
        return True
    if type(a) is not type(b) or isinstance(a, torch.Tensor):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_constant(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_constant(a[k], b[k]) for k in a)
    if isinstance(a, float) and a != a:
        return b != b
    try:
        return bool(a == b)
    except (RuntimeError, ValueError, TypeError):  # no single truth value: not provably the same
        return False


def _to_static(x: Any) -> Any:
    return x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x


class GraphedStep:
    """Capture `fn(*inputs)` (typically forward + backward) once, then replay it on new inputs."""

    def __init__(self, fn: Callable[..., Any], model: nn.Module, inputs: Sequence[Any], warmup: int = 3) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("GraphedStep needs CUDA (torch.cuda.is_available() is False)")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (cuSPARSELt searches algorithms there), got {warmup}")
        self.fn, self.model = fn, model
        self.static_inputs = tuple(_to_static(x) for x in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up: allocator, cuBLAS/cuSPARSELt handles, algorithm search
            for _ in range(warmup):
                fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        # per layer: [layer, plan key at capture, captured plan, settings, plan last copied in]
        self._layers = [[m, m._plan_key, m._plan, self._signature(m), m._plan] for m in self._sparse_layers()]
        self.graph = torch.cuda.CUDAGraph()
        for m, *_ in self._layers:
            if m.generator is not None:
                self.graph.register_generator_state(m.generator)
        with torch.cuda.graph(self.graph):
            self.static_output = fn(*self.static_inputs)
        torch.cuda.synchronize()
        for p in model.parameters():  # warm-up and capture left gradients behind; start from zero
            if p.grad is not None:
                p.grad.zero_()

    def _sparse_layers(self) -> list[SparseLinear]:
        return [m for m in self.model.modules() if isinstance(m, SparseLinear) and m.mode == "sparse"]

    @staticmethod
    def _signature(m: SparseLinear) -> tuple:
        return (m.mode, m.backend_name, m.mask_kind, m.mvue, m.backward_mask is None)

    def matches_model(self) -> bool:
        """False once a layer's mode, backend or mask settings changed (e.g. the dense switch): capture again."""
        layers = self._sparse_layers()
        return len(layers) == len(self._layers) and all(
            m is entry[0] and self._signature(m) == entry[3] for m, entry in zip(layers, self._layers))

    def refresh_plans(self) -> None:
        """Rebuild changed SparseLinear operands and copy them into the captured buffers."""
        for entry in self._layers:
            m, key, plan, sig, last = entry
            if self._signature(m) != sig:
                raise RuntimeError(f"SparseLinear settings changed since capture ({sig} -> {self._signature(m)}); "
                                   "capture the graph again")
            if key is None:
                continue
            new = m.plan(key[1])  # cheap when nothing changed: the layer's cache returns the same object
            if new is not last:
                copy_plan(plan, new)
                entry[4] = new

    def _copy_inputs(self, inputs: Sequence[Any]) -> None:
        """Copy tensor inputs into the static ones; a non-tensor input is baked into the graph, so it must not change."""
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"expected {len(self.static_inputs)} inputs, got {len(inputs)}")
        for i, (dst, src) in enumerate(zip(self.static_inputs, inputs)):
            if isinstance(dst, torch.Tensor):
                if not isinstance(src, torch.Tensor) or src.shape != dst.shape:
                    got = tuple(src.shape) if isinstance(src, torch.Tensor) else repr(src)
                    raise ValueError(f"graph input {i} has the static shape {tuple(dst.shape)}, got {got}")
                with torch.no_grad():
                    dst.copy_(src)
            elif not _same_constant(dst, src):
                raise ValueError(f"graph input {i} was {dst!r} at capture and is part of the graph; got {src!r} "
                                 "(pass it as a tensor, or capture again)")

    def __call__(self, *inputs: Any) -> Any:
        self._copy_inputs(inputs)
        self.refresh_plans()
        self.graph.replay()
        return self.static_output
