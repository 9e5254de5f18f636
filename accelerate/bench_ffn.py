"""FFN benchmark: Linear-GELU-Linear and the gated variant, width 4d, bf16, dense vs sparse_core vs
PyTorch's `to_sparse_semi_structured`. Run: `accelerate/run_ffn.sh [options]` (or python3 accelerate/bench_ffn.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import torch

from accel_bench import DTYPES, parser, run_grid
from accel_models import FFN

NOTES = [
    "Ratios are dense time / sparse time (>1: sparse faster); medians of CUDA-event timings "
    "(triton.testing.do_bench), warm-up excluded. Dense = best of eager and CUDA-graph replay.",
    "Variants: sc-fwd (Y sparse), sc-fwd-dx (Y and dX sparse, transposable mask), sc-fwd-dx-mvue "
    "(as sc-fwd-dx, plus the fused MVUE of dY^T and a dense dW GEMM), sc-all (dW sparse too: MVUE of dY^T "
    "compressed every micro-batch; what 2by4 training runs on backend 'auto'); graph = CUDA-graph replay "
    "(sparse_core.graphs.GraphedStep); semi = PyTorch's to_sparse_semi_structured weight, frozen "
    "(its backward computes dX only), eager.",
    "Forward ('fwd') timings run under no_grad and exclude per-step costs (inference-like).",
]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--kinds", nargs="+", default=["ffn", "gated"], choices=["ffn", "gated"])
    args = p.parse_args()

    def build(kind: str, d: int) -> torch.nn.Module:
        return FFN(d, 4 * d, gated=kind == "gated").to("cuda", DTYPES[args.precision])

    def make_input(d: int, tokens: int) -> torch.Tensor:
        return torch.randn(tokens, d, device="cuda", dtype=DTYPES[args.precision])

    run_grid(args, args.kinds, build, make_input, "ffn", "2:4 sparse FFN on the H200", NOTES)


if __name__ == "__main__":
    main()
