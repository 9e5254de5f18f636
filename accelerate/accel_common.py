"""Timing, environment record and output (JSON, markdown, PNG) shared by the FFN and block benchmarks."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import torch


def environment() -> dict[str, Any]:
    """GPU, versions, date and the exact command, recorded with every result file."""
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "sm": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cusparselt": torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None,
        "triton": _triton_version(),
        "sparse_core_backend": _backend_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), "accelerate/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _backend_description() -> str:
    from sparse_core.backends import resolve_backend

    return resolve_backend("auto", "cuda").describe() if hasattr(resolve_backend("auto", "cuda"), "describe") else "reference"


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def wall_ms(fn: Callable[[], Any], iters: int) -> float:
    """Mean wall time (ms, CUDA events) per call of `fn` over `iters` back-to-back calls."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def bench_ms(fn: Callable[[], Any], warmup_ms: float, rep_ms: float, min_reps: int = 20) -> float:
    """Median milliseconds of `fn` by CUDA events (triton.testing.do_bench; warm-up excluded), over at least
    `min_reps` timed calls (a rep_ms shorter than that many calls is stretched; do_bench divides rep by its own
    per-call estimate, which includes the L2 flush before each call: hence the margin)."""
    from triton.testing import do_bench

    fn()
    rep = max(rep_ms, min_reps * (1.1 * wall_ms(fn, 1) + 0.2))
    return float(do_bench(fn, warmup=warmup_ms, rep=rep, return_mode="median"))


def peak_mib(fn: Callable[[], Any], baseline_bytes: int = 0) -> float:
    """Peak allocated GPU memory (MiB) while running `fn` once, less `baseline_bytes` (memory that is not the
    measured module's: e.g. cuBLAS workspaces cached by earlier runs, one per stream, never freed)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - baseline_bytes) / 2**20


def write_json(path: Path, env: dict, args: dict, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"env": env, "args": args, "rows": rows}, indent=1))
    tmp.replace(path)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(env: dict, title: str, columns: list[tuple[str, str]], rows: list[dict], notes: list[str]) -> str:
    """A markdown page: header with the environment, one table (columns = (key, heading)), notes."""
    lines = [f"# {title}", "",
             f"GPU {env['gpu']} (sm_{env['sm']}), torch {env['torch']}, CUDA {env['cuda']}, cuSPARSELt "
             f"{env['cusparselt']}, triton {env['triton']}, {env['date']}", "",
             f"Command: `{env['command']}`", ""]
    lines += notes + [""]
    lines.append("| " + " | ".join(h for _, h in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict], series_key: str, y_key: str, title: str) -> None:
    """Speed-up vs d, one line per value of `series_key`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in sorted({r[series_key] for r in rows}, key=str):
        pts = sorted((r["d"], r[y_key]) for r in rows if r[series_key] == s and r.get(y_key) is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(s))
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ds = sorted({r["d"] for r in rows})
    ax.set_xticks(ds, [str(d) for d in ds])
    ax.set_xlabel("d (model width)")
    ax.set_ylabel("speed-up (dense time / sparse time)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
