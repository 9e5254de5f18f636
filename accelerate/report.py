"""Rebuild markdown tables and PNG plots from benchmark JSON files, merging runs (later files win per shape).

Usage: python3 accelerate/report.py OUT_STEM run1.json [run2.json ...] [--title T] [--note N ...]
       -> OUT_STEM.md, OUT_STEM.png, OUT_STEM.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # siblings, repo root

import argparse
import json

from accel_bench import PRECISION_NOTES, timing_note, write_outputs
from bench_ffn import NOTES


def merge(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(rows, envs): one row per (kind, d, tokens), taken from the last file that has it; each env carries
    its run's --precision (runs from before that option: bf16)."""
    rows: dict[tuple, dict] = {}
    envs = []
    for p in paths:
        data = json.loads(p.read_text())
        args = data.get("args", {})
        envs.append({**data["env"], "precision": args.get("precision", "bf16"), "rounds": args.get("rounds", "1")})
        for r in data["rows"]:
            rows[(r["kind"], r["d"], r["tokens"])] = {**r, "source": p.name}
    return sorted(rows.values(), key=lambda r: (r["kind"], r["tokens"], r["d"])), envs


def step_cost_note(rows: list[dict]) -> str:
    """What the per-step cost of these runs leaves out: runs from before the benchmark timed the masked decay and
    the graph's operand copy have neither."""
    sparse = [v for r in rows for k, v in r["variants"].items() if k.startswith("sc-")]
    if sparse and all("decay_ms" in v for v in sparse):
        return ", with the masked gradient decay (and, under graph replay, the operand copy into the graph's buffers)."
    return ("; these runs did not time the masked gradient decay or, under graph replay, the operand copy into the "
            "graph's buffers (both per optimizer step), so those are not included.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("stem", type=Path)
    p.add_argument("inputs", type=Path, nargs="+")
    p.add_argument("--title", default="2:4 sparse FFN / block on the H200")
    p.add_argument("--note", action="append", default=[], help="an extra note line (repeatable)")
    args = p.parse_args()
    rows, envs = merge(args.inputs)
    env = dict(envs[-1])
    env["command"] = " ; ".join(e["command"] for e in envs)
    notes = NOTES + args.note + [PRECISION_NOTES[e] for e in dict.fromkeys(e["precision"] for e in envs)]
    notes += [timing_note(" / ".join(dict.fromkeys(str(e["rounds"]) for e in envs))),
              f"Merged from {', '.join(i.name for i in args.inputs)} (later files win per shape).",
              "Per-optimizer-step costs (W and W^T compression, transposable mask refresh every step) "
              "are included amortised over 8 micro-batches" + step_cost_note(rows)]
    args.stem.parent.mkdir(parents=True, exist_ok=True)
    write_outputs(args.stem.parent, args.stem.name, env, {"inputs": [str(i) for i in args.inputs]}, rows, args.title, notes)


if __name__ == "__main__":
    main()
