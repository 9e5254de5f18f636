"""Markdown table comparing methods from `glue.json` files written by `cramming.eval.glue`.

    python -m cramming.eval.table out/*/model/glue.json > results/cramming/glue.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from cramming.eval.tasks import TASKS

__all__ = ["results_table", "main"]

_HEAD = {"cola": "CoLA (MCC)", "sst2": "SST-2 (acc)", "mrpc": "MRPC (acc/F1)", "stsb": "STS-B (P/S)",
         "qqp": "QQP (acc/F1)", "mnli": "MNLI-m (acc)", "qnli": "QNLI (acc)", "rte": "RTE (acc)"}


def _cell(metrics: dict[str, Any] | None, task: str) -> str:
    if metrics is None:
        return "-"
    values = [100 * metrics[m] for m in TASKS[task].metrics]
    return "/".join(f"{v:.1f}" for v in values)


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per result (its label), a column per task present in any of them, then the GLUE average.

    The average of a row is over its own tasks; rows with different task sets say so in the last column.
    """
    if not results:
        raise ValueError("no results to tabulate")
    tasks = [t for t in TASKS if any(t in r["tasks"] for r in results)]
    lines = ["| method | " + " | ".join(_HEAD[t] for t in tasks) + " | GLUE avg | tasks |",
             "|---|" + "---:|" * len(tasks) + "---:|---:|"]
    for r in results:
        cells = [_cell(r["tasks"].get(t), t) for t in tasks]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {100 * r['glue_average']:.1f} | {len(r['tasks'])} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        raise SystemExit("usage: python -m cramming.eval.table RESULT.json [RESULT.json ...]")
    table = results_table([json.loads(Path(p).read_text()) for p in paths])
    print(table, end="")
    return table


if __name__ == "__main__":
    main()
