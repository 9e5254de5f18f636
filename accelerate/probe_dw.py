"""Where the per-micro-batch dW cost and the per-step cost go: each piece timed alone, eager and in a graph.

Pieces at T tokens for an (out x in) layer: MVUE of dY^T in torch, the fused MVUE+compress kernel,
compress of an already-2:4 S by the fused kernel and by torch._cslt_compress, the transposable mask in
torch and the fused transposable mask + W + W^T compress kernel, and the dense/sparse dW GEMMs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import argparse
import json
from pathlib import Path

import torch

from accel_common import bench_ms, environment
from sparse_core.backends.reference import mvue_tokens
from sparse_core.masks import transposable_mask_24


def graph_ms(fn, warmup_ms: float, rep_ms: float) -> float:
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return bench_ms(g.replay, warmup_ms, rep_ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--shapes", nargs="+", default=["768x3072", "3072x768", "4096x16384", "16384x4096"],
                   help="layers as INxOUT")
    p.add_argument("--out", type=Path, default=Path("results/accelerate"))
    args = p.parse_args()
    from sparse_core import kernels as K

    rows = []
    for shape in args.shapes:
        fin, fout = (int(v) for v in shape.split("x"))
        dy = torch.randn(args.tokens, fout, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(args.tokens, fin, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(fout, fin, device="cuda", dtype=torch.bfloat16)
        st = mvue_tokens(dy, None).contiguous()
        sc = torch._cslt_compress(st)
        pieces = {
            "dense_dW_gemm": lambda: dy.t() @ x,
            "sparse_dW_gemm": lambda: torch._cslt_sparse_mm(sc, x),
            "mvue_torch": lambda: mvue_tokens(dy, None),
            "fused_mvue_compress": lambda: K.mvue_compress_t(dy, 1234),
            "fused_compress_S": lambda: K.compress_24(st),
            "cslt_compress_S": lambda: torch._cslt_compress(st),
            "transposable_mask_torch": lambda: transposable_mask_24(w),
            "fused_transposable_compress": lambda: K.transposable_compress(w),
        }
        row = {"in": fin, "out": fout, "tokens": args.tokens}
        for name, fn in pieces.items():
            for mode, timer in (("eager", bench_ms), ("graph", graph_ms)):
                try:
                    row[f"{name}_{mode}"] = timer(fn, 5.0, 30.0)
                except Exception as e:  # noqa: BLE001
                    row[f"{name}_{mode}_error"] = f"{type(e).__name__}: {str(e)[:120]}"
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe_dw.json").write_text(json.dumps({"env": environment(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
