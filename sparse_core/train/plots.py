"""PNG plots of a metrics.jsonl file (matplotlib with the Agg backend, imported lazily)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from sparse_core.train.metrics import read_jsonl, series

__all__ = ["plot_metrics", "plot_prefix"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _draw(records: list[dict[str, Any]], keys: list[str], title: str, out_png: Path) -> bool:
    """One figure with each key against step; False (nothing written) when no key has data."""
    lines = [(k, *series(records, k)) for k in keys]
    lines = [(k, s, v) for k, s, v in lines if s]
    if not lines:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for key, steps, values in lines:
            ax.plot(steps, values, label=key, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if len(lines) <= 8 else "x-small", ncol=1 if len(lines) <= 12 else 2)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out_png, dpi=120)
    finally:
        plt.close(fig)
    return True


def _file_name(panel: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", panel).strip("_") or "panel"


def plot_metrics(jsonl_path: str | Path, out_dir: str | Path, panels: dict[str, list[str]]) -> list[Path]:
    """Write `out_dir/<panel>.png` per panel, its keys against step; panels with no data are skipped (warned)."""
    if not isinstance(panels, dict) or not panels:
        raise ValueError(f"panels must be a non-empty dict of panel name -> metric keys, got {panels!r}")
    for name, keys in panels.items():
        if isinstance(keys, str) or not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"panel {name!r} needs a non-empty list of metric keys, got {keys!r}")
    records = read_jsonl(jsonl_path)
    written = []
    for name, keys in panels.items():
        out = Path(out_dir) / f"{_file_name(name)}.png"
        if _draw(records, list(keys), name, out):
            written.append(out)
        else:
            warnings.warn(f"plot panel {name!r}: none of {list(keys)} is in {jsonl_path}; skipped")
    return written


def plot_prefix(jsonl_path: str | Path, out_png: str | Path, prefix: str) -> Path | None:
    """Plot every key starting with `prefix` (e.g. 'sparse/flip_rate/'); None (warned) when none exists."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    records = read_jsonl(jsonl_path)
    keys = sorted({k for rec in records for k in rec if k.startswith(prefix)})
    out_png = Path(out_png)
    if not keys or not _draw(records, keys, prefix, out_png):
        warnings.warn(f"no metric starting with {prefix!r} in {jsonl_path}; nothing plotted")
        return None
    return out_png
