"""Host (CPU) and GPU time per call of one 2:4 sparse GEMM: torch._cslt_sparse_mm (plans rebuilt every call)
vs sparse_core.backends.cslt_ext.sparse_mm (plans cached) vs dense torch.mm, for the three products of an FFN
up-projection W (4d, d) at a fixed token count. Writes cslt_host.json and cslt_host.md under --out.
Run: python3 accelerate/bench_cslt_host.py --out results/accelerate
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import torch

from accel_common import bench_ms, environment, markdown, write_json
from sparse_core.backends import cslt_ext
from sparse_core.masks import mask_24

NOTES = [
    "host_us: CPU time per eager call (time.perf_counter around --calls calls issued back to back without "
    "synchronising, divided by the count; median of --reps repeats; the GPU queue never fills at these counts). "
    "gpu_ms: median CUDA-event time per call (triton.testing.do_bench).",
    "torch = torch._cslt_sparse_mm (descriptors, algorithm selection and plan built every call); ours = "
    "sparse_core.backends.cslt_ext.sparse_mm (plan cached per shape/layout; Python input checks included); "
    "ours_raw = the extension called directly (no Python checks); dense = torch.mm on the dense operands.",
    "Products of W (4d, d): fwd = W @ X^T -> Y (T, 4d); dx = W^T @ dY^T -> dX (T, d); dw = S(dY^T) (4d, T) @ X -> "
    "dW (4d, d). same = ours bit-identical to torch.",
]
COLUMNS = [("d", "d"), ("tokens", "T"), ("product", "product"), ("alg_id", "alg"),
           ("host_us_torch", "host us torch"), ("host_us_ours", "host us ours"), ("host_us_ours_raw", "host us raw"),
           ("host_us_dense", "host us dense"), ("host_speedup", "host torch/ours"),
           ("gpu_ms_torch", "GPU ms torch"), ("gpu_ms_ours", "GPU ms ours"), ("gpu_ms_dense", "GPU ms dense"),
           ("same", "same")]


def operands(product: str, d: int, tokens: int, dtype: torch.dtype):
    """(dense 2:4 A, B, transpose_result) of one product, laid out as the cusparselt backend calls it."""
    out_f, in_f = 4 * d, d
    m, k, n, row_major, tr = {"fwd": (out_f, in_f, tokens, False, True), "dx": (in_f, out_f, tokens, False, True),
                              "dw": (out_f, tokens, in_f, True, False)}[product]
    a = torch.randn(m, k, device="cuda")
    a = (a * mask_24(a)).to(dtype)
    b = torch.randn(k, n, device="cuda", dtype=dtype) if row_major else torch.randn(n, k, device="cuda", dtype=dtype).t()
    return a, b, tr


def host_us(fn, calls: int, reps: int) -> float:
    """Median over `reps` of the CPU microseconds per call of `calls` back-to-back calls (no sync inside)."""
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def measure(product: str, d: int, tokens: int, args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    a, b, tr = operands(product, d, tokens, dtype)
    ac = torch._cslt_compress(a)
    alg = int(torch._cslt_sparse_mm_search(ac, b, transpose_result=tr)) if args.search else 0
    raw = cslt_ext.load()
    dense_a = a.t() if tr else a  # dense product in the same output layout
    dense_b = b.t() if tr else b
    fns = {
        "torch": lambda: torch._cslt_sparse_mm(ac, b, transpose_result=tr, alg_id=alg),
        "ours": lambda: cslt_ext.sparse_mm(ac, b, transpose_result=tr, alg_id=alg),
        "ours_raw": lambda: raw.sparse_mm(ac, b, tr, alg),
        "dense": lambda: torch.mm(dense_b, dense_a) if tr else torch.mm(dense_a, dense_b),
    }
    row = {"d": d, "tokens": tokens, "product": product, "m": a.shape[0], "k": a.shape[1], "n": b.shape[1],
           "alg_id": alg, "same": bool(torch.equal(fns["ours"](), fns["torch"]()))}
    for name, fn in fns.items():
        row[f"host_us_{name}"] = round(host_us(fn, args.calls, args.reps), 2)
        row[f"gpu_ms_{name}"] = round(bench_ms(fn, args.warmup_ms, args.rep_ms), 4)
    row["host_speedup"] = round(row["host_us_torch"] / row["host_us_ours"], 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--d", type=int, nargs="+", default=[768, 1024, 2048, 4096])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--products", nargs="+", default=["fwd", "dx", "dw"], choices=["fwd", "dx", "dw"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--calls", type=int, default=50, help="back-to-back calls per host timing")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--search", action="store_true", help="use torch's searched algorithm id (both sides) instead of 0")
    p.add_argument("--warmup-ms", type=float, default=10.0)
    p.add_argument("--rep-ms", type=float, default=50.0)
    p.add_argument("--out", type=Path, default=Path("results/accelerate"))
    args = p.parse_args()
    reason = cslt_ext.available()
    if reason is not None:
        raise SystemExit(f"cslt_ext is not usable here: {reason}")
    args.out.mkdir(parents=True, exist_ok=True)
    env, rows = environment(), []
    for d in args.d:
        for product in args.products:
            torch.manual_seed(0)
            rows.append(measure(product, d, args.tokens, args))
            print({k: rows[-1][k] for k, _ in COLUMNS}, flush=True)
            write_json(args.out / "cslt_host.json", env, {k: str(v) for k, v in vars(args).items()}, rows)
    info = cslt_ext.cache_info()
    notes = NOTES + [f"Plan cache at the end: {info['size']} plans, {info['hits']} hits, {info['misses']} misses."]
    (args.out / "cslt_host.md").write_text(markdown(env, "cuSPARSELt host cost: cached plans vs torch", COLUMNS, rows, notes))
    print(f"wrote {args.out / 'cslt_host.json'} and {args.out / 'cslt_host.md'}")


if __name__ == "__main__":
    main()
