"""Rebuild markdown tables and PNG plots from benchmark JSON files, merging runs (later files win per shape).

Usage: python3 accelerate/report.py OUT_STEM run1.json [run2.json ...]  -> OUT_STEM.md, OUT_STEM.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import argparse
import json

from accel_bench import PRECISION_NOTES, write_outputs
from bench_ffn import NOTES


def merge(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(rows, envs): one row per (kind, d, tokens), taken from the last file that has it; each env carries
    its run's --precision (runs from before that option: bf16)."""
    rows: dict[tuple, dict] = {}
    envs = []
    for p in paths:
        data = json.loads(p.read_text())
        envs.append({**data["env"], "precision": data.get("args", {}).get("precision", "bf16")})
        for r in data["rows"]:
            rows[(r["kind"], r["d"], r["tokens"])] = {**r, "source": p.name}
    return sorted(rows.values(), key=lambda r: (r["kind"], r["tokens"], r["d"])), envs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("stem", type=Path)
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("--title", default="2:4 sparse FFN / block on the H200")
    args = p.parse_args()
    rows, envs = merge(args.inputs)
    env = dict(envs[-1])
    env["command"] = " ; ".join(e["command"] for e in envs)
    notes = NOTES + [PRECISION_NOTES[e] for e in dict.fromkeys(e["precision"] for e in envs)]
    notes += [f"Merged from {', '.join(i.name for i in args.inputs)} (later files win per shape).",
              "Per-optimizer-step costs (W and W^T compression, transposable mask refresh every step) "
              "are included amortised over 8 micro-batches."]
    args.stem.parent.mkdir(parents=True, exist_ok=True)
    write_outputs(args.stem.parent, args.stem.name, env, {"inputs": [str(i) for i in args.inputs]}, rows, args.title, notes)


if __name__ == "__main__":
    main()
