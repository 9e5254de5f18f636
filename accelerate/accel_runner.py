"""Time one module in every variant: eager and CUDA-graph forward / forward+backward, per-step costs, peak memory.

Per micro-batch a sparse variant pays its GEMMs (and, for 'sc-all', the MVUE compression of dY^T);
per optimizer step it pays the masked gradient decay (2by4, SR-STE), the weight compression (W and W^T) and,
every `refresh_interval` steps, the transposable mask refresh (through the backend's fused mask + compression
pass where it has one, as in training), and under CUDA-graph replay the copy of the new operands into the
captured buffers: those are timed apart and added amortised over `accum` micro-batches (`with_totals`).
Over several rounds (all variants measured once per round, so dense and sparse see the same GPU drift),
each timing is the median over the rounds (`merge_rounds`).
"""

from __future__ import annotations

import copy
import gc
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from accel_common import bench_ms, peak_mib
from accel_models import SPARSE_VARIANTS, apply_variant, refresh_step, sparse_layers
from sparse_core.controller import decay_gradient_
from sparse_core.graphs import GraphedStep, copy_plan


@dataclass
class Settings:
    accum: int = 8  # micro-batches per optimizer step (weight compression amortised over these)
    refresh_interval: int = 1  # optimizer steps between mask refreshes (1 = every step, the worst case)
    warmup_ms: float = 10.0
    rep_ms: float = 50.0
    # sparse variants also timed eagerly (host cost shown)
    eager_sparse: tuple[str, ...] = ("sc-fwd-dx", "sc-fwd-dx-mvue", "sc-all")
    # 'bf16': bf16 modules and input; 'amp': fp32 master weights and input, bf16 autocast (mixed-precision
    # training: dense re-casts its weights every forward and keeps the bf16 copies for the backward)
    precision: str = "bf16"


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__


def _warm_up_gemms(x: torch.Tensor) -> None:
    """Small linear layers forward and backward on x's stream, so the workspaces that the process's first cuBLAS /
    cuBLASLt calls allocate (and keep) exist before any variant's baseline, not only inside the first one's peak."""
    for dtype in dict.fromkeys((x.dtype, torch.bfloat16)):
        w = torch.zeros(64, 64, device=x.device, dtype=dtype, requires_grad=True)
        b = torch.zeros(64, device=x.device, dtype=dtype, requires_grad=True)
        torch.nn.functional.linear(torch.zeros(64, 64, device=x.device, dtype=dtype), w, b).sum().backward()


def measure_variant(build: Callable[[], nn.Module], x: torch.Tensor, variant: str, s: Settings) -> dict:
    """All timings (ms) and peak memory (MiB) of one variant; failures recorded as strings."""
    res: dict = {"variant": variant}
    _warm_up_gemms(x)
    # what is allocated before the model exists, less the input, is not this variant's memory (earlier variants'
    # graph captures leave cuBLAS workspaces behind, one per side stream)
    baseline = torch.cuda.memory_allocated() - x.untyped_storage().nbytes()
    model = apply_variant(build(), variant)
    x = x.detach().requires_grad_(True)

    def run(inp: torch.Tensor) -> torch.Tensor:  # autocast's weight-cast cache off: graph capture needs it off
        with torch.autocast("cuda", torch.bfloat16, enabled=s.precision == "amp", cache_enabled=False):
            return model(inp)

    with torch.no_grad():
        gy = torch.randn_like(run(x))  # also builds sparse plans (once per optimizer step)

    def fwd() -> None:
        with torch.no_grad():
            run(x)

    def fwd_bwd() -> None:
        run(x).backward(gy)

    sparse = variant in SPARSE_VARIANTS
    eager = not sparse or variant in s.eager_sparse
    graph = variant != "semi"
    try:
        res["peak_mib"] = peak_mib(fwd_bwd, baseline)
    except Exception as e:  # e.g. the semi-structured weight has no backward
        res["peak_mib_error"] = _err(e)
    for mode, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        if eager:
            try:
                res[f"eager_{mode}"] = bench_ms(fn, s.warmup_ms, s.rep_ms)
            except Exception as e:
                res[f"eager_{mode}_error"] = _err(e)
        if graph:
            try:
                step = GraphedStep(fn, model, ())
                res[f"graph_{mode}"] = bench_ms(lambda: step(), s.warmup_ms, s.rep_ms)
                del step
            except Exception as e:
                res[f"graph_{mode}_error"] = _err(e)
    if sparse:
        layers = sparse_layers(model)

        def compress() -> None:  # an optimizer step without a mask refresh: W and W^T compressed again
            for m in layers:
                m.invalidate()
                m.plan(torch.bfloat16)

        def refresh() -> None:  # a step with one
            refresh_step(layers, torch.bfloat16)

        res["compress_ms"] = bench_ms(compress, s.warmup_ms, s.rep_ms)
        before = [m._plan for m in layers]
        for m in layers:
            m.refresh_mask_async()
        res["refresh_fused"] = all(m._plan is not b for m, b in zip(layers, before))  # only a fused refresh builds them
        res["refresh_step_ms"] = bench_ms(refresh, s.warmup_ms, s.rep_ms)

        def decay() -> None:  # the masked gradient decay of every optimizer step: grad += lambda (1 - M) W
            for m in layers:
                decay_gradient_(m.weight.grad, m.weight.detach(), m.mask, 6e-5)

        run(x).backward(gy)  # gradients to decay
        res["decay_ms"] = bench_ms(decay, s.warmup_ms, s.rep_ms)
        plans = [m._plan for m in layers]
        captured = copy.deepcopy(plans)  # the buffers a CUDA graph was captured with

        def copy_into_graph() -> None:  # GraphedStep.refresh_plans after each optimizer step
            for dst, src in zip(captured, plans):
                copy_plan(dst, src)

        res["graph_copy_ms"] = bench_ms(copy_into_graph, s.warmup_ms, s.rep_ms)
    del model, gy
    gc.collect()
    torch.cuda.empty_cache()
    return res


def merge_rounds(rounds: list[dict]) -> dict:
    """One variant's results over interleaved rounds: each timing the median over the rounds that have it,
    everything else (peak memory, flags, errors) from the first round."""
    out = dict(rounds[0])
    for key in {k for r in rounds for k, v in r.items() if isinstance(v, float) and k != "peak_mib"}:
        out[key] = statistics.median(r[key] for r in rounds if isinstance(r.get(key), float))
    out["rounds"] = len(rounds)
    return out


def with_totals(res: dict, s: Settings) -> dict:
    """Adds the per-step cost amortised over `s.accum` micro-batches (mask refresh every `s.refresh_interval`
    steps, compression on the others, the masked decay every step; graph replay also copies the new operands
    into its buffers every step) and each forward+backward time with it included."""
    if "refresh_step_ms" not in res or "compress_ms" not in res:
        return res
    per_step = (res["refresh_step_ms"] + res["compress_ms"] * (s.refresh_interval - 1)) / s.refresh_interval
    per_step += res.get("decay_ms", 0.0)  # runs from before it was timed have none
    res["per_step_amortised_ms"] = per_step / s.accum
    res["graph_per_step_amortised_ms"] = (per_step + res.get("graph_copy_ms", 0.0)) / s.accum
    for kind in ("graph", "eager"):
        if f"{kind}_fwd_bwd" in res:
            step = res["graph_per_step_amortised_ms" if kind == "graph" else "per_step_amortised_ms"]
            res[f"{kind}_fwd_bwd_total"] = res[f"{kind}_fwd_bwd"] + step
    return res


def summarise(results: dict[str, dict]) -> dict:
    """Speed-ups (dense / sparse, every overhead included) from the per-variant results of one shape."""
    dense = results.get("dense", {})
    out: dict = {}
    for mode in ("fwd", "fwd_bwd"):
        d = [dense[k] for k in (f"eager_{mode}", f"graph_{mode}") if k in dense]
        if not d:
            continue
        best_dense = min(d)
        out[f"dense_{mode}_ms"] = best_dense
        best = None
        for v, r in results.items():
            if v == "dense":
                continue
            for kind in ("graph", "eager"):
                t = r.get(f"{kind}_{mode}_total", r.get(f"{kind}_{mode}"))
                if t is None:
                    continue
                out[f"x_{v}_{kind}_{mode}"] = best_dense / t
                if v in SPARSE_VARIANTS and (best is None or t < best[0]):
                    best = (t, f"{v}/{kind}")
        if best is not None:
            out[f"best_{mode}_ms"], out[f"best_{mode}"] = best
            out[f"speedup_{mode}"] = best_dense / best[0]
        nostep = [r[f"{k}_{mode}"] for v, r in results.items() if v in SPARSE_VARIANTS
                  for k in ("graph", "eager") if f"{k}_{mode}" in r]
        if nostep and mode == "fwd_bwd":  # micro-batch GEMM path alone, per-step costs left out
            out[f"speedup_{mode}_no_step"] = best_dense / min(nostep)
    return out
