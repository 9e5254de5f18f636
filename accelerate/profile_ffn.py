"""Where an FFN's forward+backward time goes, dense vs sparse: GPU kernel time per micro-batch by kind
(dense GEMM, sparse GEMM, MVUE / compress kernels, GELU, reductions, copies, ...) from torch.profiler.

Explains the speed-ups of bench_ffn.py: which passes the sparse path adds and what the GEMMs save.
Run: python3 accelerate/profile_ffn.py --d 768 4096 --tokens 16384 --out results/accelerate
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import torch
from torch.profiler import ProfilerActivity, profile

from accel_common import environment, markdown, wall_ms, write_json
from accel_models import FFN, SPARSE_VARIANTS, apply_variant, refresh_step, sparse_layers
from sparse_core.graphs import GraphedStep

# first match wins; CUDA kernel names (cuSPARSELt's carry 'sparse' / 'sp' in theirs; this project's Triton
# kernels are named _<what>_kernel, with no C++ 'void ...' signature)
KINDS = [
    ("sparse GEMM", re.compile(r"sparse|_sp_|spmma|cusparse", re.I)),
    ("MVUE / compress (Triton)", re.compile(r"^_(cols|rows|transposable|mask|masked_decay)_kernel")),
    ("dense GEMM", re.compile(r"gemm|nvjet|cutlass|xmma|sm90_|sm80_", re.I)),
    ("GELU", re.compile(r"gelu", re.I)),
    ("reduction (bias grad)", re.compile(r"reduce|sum", re.I)),
    ("copy / cast / fill", re.compile(r"copy|cast|fill|memcpy|memset", re.I)),
    ("elementwise (add, bias, accumulate)", re.compile(r"elementwise|vectorized|add", re.I)),
]


def kind_of(name: str) -> str:
    """The kind of a CUDA kernel, from its name (KINDS, first match)."""
    return next((kind for kind, pattern in KINDS if pattern.search(name)), "other")


def kernel_ms(fn, iters: int) -> dict[str, float]:
    """GPU time (ms) per call of `fn` of every CUDA kernel it launches, mean of `iters` calls."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    per_kernel: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None)
        if us is None:
            us = getattr(e, "cuda_time_total", 0.0)
        if us and e.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[e.key] += us / 1e3 / iters
    return dict(per_kernel)


def by_kind(per_kernel: dict[str, float]) -> dict[str, float]:
    """Kernel times summed by kind (`kind_of`)."""
    out: dict[str, float] = defaultdict(float)
    for name, ms in per_kernel.items():
        out[kind_of(name)] += ms
    return dict(out)


def top_kernels(per_kernel: dict[str, float], n: int = 10) -> list[dict]:
    """The n longest kernels with their kind."""
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:n]
    return [{"name": name[:160], "kind": kind_of(name), "ms": ms} for name, ms in top]


def profile_variant(d: int, tokens: int, variant: str, iters: int) -> dict:
    """GPU kernel time per fwd+bwd (ms) by kind and the ten longest kernels, for one variant; for a sparse one
    also the kernels of a mask-refresh optimizer step (`refresh_mask_async` of both layers, as training runs it)."""
    torch.manual_seed(0)
    model = apply_variant(FFN(d, 4 * d).to("cuda", torch.bfloat16), variant)
    x = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16)
    def step() -> None:
        model(x).backward(gy)

    for _ in range(3):  # plans, algorithm search, autotuning
        step()
    per_kernel = kernel_ms(step, iters)
    row = {"variant": variant, "total_ms": sum(per_kernel.values()), "by_kind": by_kind(per_kernel),
           "top_kernels": top_kernels(per_kernel), "wall_ms": wall_ms(step, iters)}
    try:  # the same step replayed from a CUDA graph: its kernels and its wall time (gaps = wall - kernels)
        graphed = GraphedStep(step, model, ())
        replay = kernel_ms(graphed, iters)
        row.update(graph_total_ms=sum(replay.values()), graph_wall_ms=wall_ms(graphed, iters),
                   graph_top_kernels=top_kernels(replay))
        del graphed
    except Exception as e:  # noqa: BLE001  a diagnostic, recorded rather than fatal
        row["graph_error"] = f"{type(e).__name__}: {str(e)[:160]}"
    layers = sparse_layers(model) if variant in SPARSE_VARIANTS else []
    if layers:
        def refresh() -> None:
            refresh_step(layers, torch.bfloat16)
        refresh()  # autotuning
        step = kernel_ms(refresh, iters)
        row.update(refresh_ms=sum(step.values()), refresh_kernels=top_kernels(step))
    return row


def describe(row: dict) -> str:
    """One printed line of a profiled row: time by kind, and the refresh step's longest kernels."""
    line = f"d={row['d']} {row['variant']}: {row['total_ms']:.3f} ms " + ", ".join(
        f"{k} {ms:.3f}" for k, ms in row["by_kind"].items())
    if "refresh_ms" in row:
        line += f"; refresh step {row['refresh_ms']:.3f} ms: " + ", ".join(
            f"{k['name'][:40]} {k['ms']:.3f}" for k in row["refresh_kernels"][:4])
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--d", type=int, nargs="+", default=[768, 4096])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--variants", nargs="+", default=["dense", "sc-fwd-dx-mvue", "sc-all"],
                   choices=["dense", *SPARSE_VARIANTS])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("results/accelerate"))
    p.add_argument("--name", default="ffn-profile")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    rows = []
    for d in args.d:
        for v in args.variants:
            r = {"d": d, "tokens": args.tokens, **profile_variant(d, args.tokens, v, args.iters)}
            rows.append(r)
            print(describe(r), flush=True)
    write_json(args.out / f"{args.name}.json", env, {k: str(v) for k, v in vars(args).items()}, rows)
    kinds = [k for k, _ in KINDS] + ["other"]
    flat = [{"d": r["d"], "variant": r["variant"], "total_ms": r["total_ms"], "refresh_ms": r.get("refresh_ms"),
             "wall_ms": r.get("wall_ms"), "graph_total_ms": r.get("graph_total_ms"),
             "graph_wall_ms": r.get("graph_wall_ms"), **r["by_kind"]} for r in rows]
    cols = [("d", "d"), ("variant", "variant"), ("total_ms", "GPU ms per f+b")] + [(k, k + " ms") for k in kinds] \
        + [("refresh_ms", "GPU ms per mask-refresh step"), ("wall_ms", "eager wall ms"),
           ("graph_total_ms", "graph-replay GPU ms"), ("graph_wall_ms", "graph-replay wall ms")]
    notes = [f"GPU kernel time per forward+backward of Linear(d, 4d)-GELU-Linear(4d, d), bf16, {args.tokens} tokens, "
             f"eager, mean of {args.iters} iterations under torch.profiler (kernels only: host gaps and per-step "
             "mask/compression costs are not in it). Kinds by kernel name; the JSON lists the ten longest kernels "
             "of each row with their kind. The last column: GPU kernel time of one optimizer step's mask refresh of "
             "both layers (refresh_mask_async + operands, as training runs it; its kernels in the JSON). Then the "
             "same step unprofiled (eager wall time, CUDA events) and replayed from a CUDA graph (its kernel time "
             "under the profiler and its wall time): wall minus kernel time is what the GPU spends between kernels."]
    (args.out / f"{args.name}.md").write_text(markdown(env, "Where the FFN's time goes (torch.profiler)", cols, flat,
                                                      notes))


if __name__ == "__main__":
    main()
