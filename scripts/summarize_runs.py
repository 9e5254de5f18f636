"""Compare runs of one recipe: final metrics, throughput and curves, as JSON + markdown + PNG.

    python scripts/summarize_runs.py --out results/nanogpt/2026-11-30-h200 --curve val/loss \
        --final val/loss --speed train/tokens_per_s dense=run1/metrics.jsonl 2by4=run2/metrics.jsonl

The first run is the reference: the table gives each run's difference to it. `--note` lines (GPU, versions,
commands) go on top of the markdown and into the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sparse_core.train.metrics import read_jsonl


def series(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every record holding `key`, the last value winning for a repeated step."""
    points = {r["step"]: float(r[key]) for r in records if key in r}
    return sorted(points.items())


def summarize(runs: dict[str, Path], curve: str, finals: list[str], speed: str | None) -> dict:
    """Per run: the last value of each `finals` key and the median of `speed` (first 10% of logs dropped)."""
    out = {}
    for label, path in runs.items():
        records = read_jsonl(path)
        row = {key: (series(records, key)[-1][1] if series(records, key) else None) for key in finals}
        if speed:
            values = [v for _, v in series(records, speed)]
            row[speed] = statistics.median(values[len(values) // 10:]) if values else None
        row["curve"] = series(records, curve)
        out[label] = row
    return out


def plot(summary: dict, curve: str, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, row in summary.items():
        steps, values = zip(*row["curve"]) if row["curve"] else ((), ())
        ax.plot(steps, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(curve)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def markdown(summary: dict, finals: list[str], speed: str | None, notes: list[str]) -> str:
    ref_label, ref = next(iter(summary.items()))
    cols = finals + ([speed] if speed else [])
    lines = [*notes, "", "| run | " + " | ".join(cols) + f" | {finals[0]} - {ref_label} |",
             "|---" * (len(cols) + 2) + "|"]
    for label, row in summary.items():
        cells = ["-" if row[c] is None else f"{row[c]:.4g}" for c in cols]
        diff = None if row[finals[0]] is None or ref[finals[0]] is None else row[finals[0]] - ref[finals[0]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if diff is None else f'{diff:+.4f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="label=path/to/metrics.jsonl (the first is the reference)")
    p.add_argument("--out", required=True, help="output stem: writes <out>.json, <out>.md, <out>.png")
    p.add_argument("--curve", required=True, help="metric plotted against step")
    p.add_argument("--final", action="append", required=True, help="metric whose last value is tabulated")
    p.add_argument("--speed", help="throughput metric (median over the run)")
    p.add_argument("--note", action="append", default=[], help="a line of context for the markdown")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"bad run {item!r}: give label=path/to/metrics.jsonl of an existing file")
        runs[label] = Path(path)
    summary = summarize(runs, args.curve, args.final, args.speed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"notes": args.note, "runs": summary}, indent=1))
    out.with_suffix(".md").write_text(markdown(summary, args.final, args.speed, args.note))
    plot(summary, args.curve, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
