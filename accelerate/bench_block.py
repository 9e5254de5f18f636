"""Transformer-block benchmark: pre-LN block (causal SDPA attention, FFN width 4d, FFN linears sparse),
bf16, dense vs sparse_core vs `to_sparse_semi_structured`. Run: `accelerate/run_block.sh [options]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import torch

from accel_bench import DTYPES, parser, run_grid
from bench_ffn import NOTES
from accel_models import Block


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seq", type=int, default=1024, help="sequence length (batch = tokens / seq)")
    p.add_argument("--head-dim", type=int, default=64)
    args = p.parse_args()
    for t in args.tokens:
        if t % args.seq:
            raise ValueError(f"--tokens {t} is not a multiple of --seq {args.seq}")

    def build(kind: str, d: int) -> torch.nn.Module:
        return Block(d, d // args.head_dim, 4 * d).to("cuda", DTYPES[args.precision])

    def make_input(d: int, tokens: int) -> torch.Tensor:
        return torch.randn(tokens // args.seq, args.seq, d, device="cuda", dtype=DTYPES[args.precision])

    notes = NOTES + [f"Block: sequence {args.seq}, head dim {args.head_dim}; only the two FFN linears are "
                     "sparse (attention projections and SDPA stay dense, as in the project's recipes)."]
    run_grid(args, ["block"], build, make_input, "block", "2:4 sparse pre-LN transformer block on the H200", notes)


if __name__ == "__main__":
    main()
