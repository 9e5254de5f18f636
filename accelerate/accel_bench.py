"""Shared command line of the FFN and block benchmarks: grid loop, incremental JSON, markdown, plot."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from accel_common import environment, markdown, plot, write_json
from accel_models import VARIANTS
from accel_runner import Settings, measure_variant, merge_rounds, summarise, with_totals


DTYPES = {"bf16": torch.bfloat16, "amp": torch.float32}  # module and input dtype of each --precision
PRECISION_NOTES = {
    "bf16": "Precision: bf16 modules and input (weights, gradients and activations in bf16).",
    "amp": "Precision: fp32 master weights and input under bf16 autocast, as in mixed-precision training: dense "
           "casts its weights to bf16 every forward and keeps the casts for the backward; sparse layers cast and "
           "compress once per optimizer step (in the per-step cost).",
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--d", type=int, nargs="+", default=[768, 1024, 1600, 2048, 4096, 5120])
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 65536])
    p.add_argument("--skip", nargs="*", default=[], help="shapes to leave out, as DxTOKENS (e.g. 5120x65536)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--accum", type=int, default=8, help="micro-batches per optimizer step")
    p.add_argument("--refresh-interval", type=int, default=1, help="optimizer steps between mask refreshes")
    p.add_argument("--precision", choices=["bf16", "amp"], default="bf16",
                   help="bf16 modules, or fp32 master weights under bf16 autocast (mixed-precision training)")
    p.add_argument("--warmup-ms", type=float, default=10.0)
    p.add_argument("--rep-ms", type=float, default=50.0, help="timed time per measurement (at least 20 calls)")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds over all variants per shape; each timing is the median over the rounds")
    p.add_argument("--out", type=Path, default=Path("results/accelerate"))
    p.add_argument("--name", default=None, help="file stem of the outputs")
    return p


def run_grid(args: argparse.Namespace, kinds: list[str], build: Callable[[str, int], nn.Module],
             make_input: Callable[[int, int], torch.Tensor], stem: str, title: str, notes: list[str]) -> list[dict]:
    """Measure every (kind, d, tokens) in every variant; rewrite JSON, markdown and PNG after each shape."""
    if args.accum < 1 or args.refresh_interval < 1 or args.rounds < 1:
        raise ValueError(f"--accum, --refresh-interval and --rounds must be >= 1, got {args.accum}, "
                         f"{args.refresh_interval}, {args.rounds}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    s = Settings(accum=args.accum, refresh_interval=args.refresh_interval, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                 precision=args.precision)
    stem = args.name or stem
    rows: list[dict] = []
    notes = notes + [PRECISION_NOTES[s.precision], f"Per-optimizer-step costs (masked gradient decay, W and W^T compression, transposable mask "
                     f"refresh every {s.refresh_interval} step(s), fused where the backend can, as in training; under graph "
                     f"replay also the copy of the new operands into the captured buffers) are included amortised "
                     f"over {s.accum} micro-batches.",
                     timing_note(args.rounds), MEMORY_NOTE]
    for kind in kinds:
        for tokens in args.tokens:
            for d in args.d:
                if f"{d}x{tokens}" in args.skip:
                    continue
                t0 = time.time()
                torch.manual_seed(0)
                x = make_input(d, tokens)
                rounds: dict[str, list[dict]] = {v: [] for v in args.variants}
                for _ in range(args.rounds):  # interleaved: every variant once per round
                    for v in args.variants:
                        torch.manual_seed(0)  # same weights in every variant
                        try:
                            rounds[v].append(measure_variant(lambda: build(kind, d), x, v, s))
                        except Exception as e:  # noqa: BLE001  a whole variant failing is recorded, not fatal
                            rounds[v].append({"variant": v, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                per = {v: with_totals(merge_rounds(rs), s) for v, rs in rounds.items()}
                row = {"kind": kind, "d": d, "tokens": tokens, **summarise(per), "variants": per,
                       "seconds": round(time.time() - t0, 1)}
                rows.append(row)
                print(f"{kind} d={d} T={tokens}: fwd_bwd x{row.get('speedup_fwd_bwd', float('nan')):.3f} "
                      f"({row.get('best_fwd_bwd')}), fwd x{row.get('speedup_fwd', float('nan')):.3f} "
                      f"[{row['seconds']} s]", flush=True)
                del x
                write_outputs(args.out, stem, env, vars(args), rows, title, notes)
    return rows


MEMORY_NOTE = ("Peak memory: the most allocated during one forward+backward (first round), counting the variant's "
               "module, operands, input, activations and gradients; memory allocated before its module was built "
               "(cuBLAS workspaces, made by a warm-up GEMM before the first variant and by earlier variants' graph "
               "captures) is left out. The sparse column is the fastest variant's.")


def timing_note(rounds: int | str) -> str:
    return (f"Timings: CUDA events (triton do_bench, warm-up excluded), median of >= 20 calls; {rounds} interleaved "
            "round(s) over all variants per shape, each timing the median over the rounds.")


def _flat(rows: list[dict]) -> list[dict]:
    """Table rows: the summary, the peak memory of dense and of the fastest sparse variant (the one the speed-up
    is for), and the training path's own ratio and memory ('sc-all': what 2by4 runs on backend 'auto')."""
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k != "variants"}
        variants = r["variants"]
        f["dense_mib"] = variants.get("dense", {}).get("peak_mib")
        name, _, mode = str(r.get("best_fwd_bwd", "/")).partition("/")
        best = variants.get(name, {})
        f["sparse_mib"] = best.get("peak_mib")
        f["per_step_ms"] = best.get("graph_per_step_amortised_ms" if mode == "graph" else "per_step_amortised_ms",
                                    best.get("per_step_amortised_ms"))
        trained = [r[k] for k in ("x_sc-all_graph_fwd_bwd", "x_sc-all_eager_fwd_bwd") if r.get(k) is not None]
        f["x_training_path"] = max(trained) if trained else None
        f["training_path_mib"] = variants.get("sc-all", {}).get("peak_mib")
        flat.append(f)
    return flat


def write_outputs(out: Path, stem: str, env: dict, args: dict, rows: list[dict], title: str, notes: list[str]) -> None:
    write_json(out / f"{stem}.json", env, {k: str(v) for k, v in args.items()}, rows)
    cols = [("kind", "module"), ("d", "d"), ("tokens", "tokens"),
            ("dense_fwd_bwd_ms", "dense f+b ms"), ("best_fwd_bwd_ms", "sparse f+b ms"), ("speedup_fwd_bwd", "f+b x"),
            ("best_fwd_bwd", "best sparse"), ("per_step_ms", "per-step ms (amortised, incl.)"),
            ("speedup_fwd_bwd_no_step", "f+b x, GEMM path only"),
            ("x_sc-fwd_graph_fwd_bwd", "x fwd"), ("x_sc-fwd-dx_graph_fwd_bwd", "x fwd+dx"),
            ("x_sc-fwd-dx-mvue_graph_fwd_bwd", "x fwd+dx, MVUE dense dW"), ("x_sc-all_graph_fwd_bwd", "x all 3"), ("x_sc-fwd-dx_eager_fwd_bwd", "x fwd+dx eager"),
            ("x_semi_eager_fwd_bwd", "x semi (dX only)"),
            ("dense_fwd_ms", "dense fwd ms"), ("speedup_fwd", "fwd x"), ("x_semi_eager_fwd", "fwd x semi"),
            ("dense_mib", "dense peak MiB"), ("sparse_mib", "sparse peak MiB (best variant)"),
            ("x_training_path", "f+b x, sc-all (2by4's path)"), ("training_path_mib", "sc-all peak MiB")]
    flat = _flat(rows)
    (out / f"{stem}.md").write_text(markdown(env, title, cols, flat, notes))
    plot_rows = [{"d": r["d"], "series": f"{r['kind']} T={r['tokens']}", "y": r.get("speedup_fwd_bwd")} for r in flat]
    plot(out / f"{stem}.png", plot_rows, "series", "y", title + "\nforward+backward speed-up, every overhead included")
