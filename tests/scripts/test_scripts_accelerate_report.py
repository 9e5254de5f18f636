"""accelerate/: the speed-up arithmetic, the merging of runs and the written tables (no GPU needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ACCELERATE = Path(__file__).resolve().parents[2] / "accelerate"
sys.path.insert(0, str(ACCELERATE))  # the benchmarks are scripts, not a package

from accel_bench import write_outputs  # noqa: E402
from accel_runner import Settings, merge_rounds, summarise, with_totals  # noqa: E402
from profile_ffn import by_kind, kind_of, top_kernels  # noqa: E402
from report import merge, step_cost_note  # noqa: E402

ENV = {"gpu": "test GPU", "sm": "9.0", "torch": "x", "cuda": "x", "cusparselt": 800, "triton": "x",
       "date": "2026-11-30", "command": "python3 accelerate/bench_ffn.py"}


def results() -> dict[str, dict]:
    return {
        "dense": {"eager_fwd_bwd": 10.0, "graph_fwd_bwd": 9.0, "eager_fwd": 3.0, "peak_mib": 100.0},
        "sc-fwd-dx": {"graph_fwd_bwd": 7.0, "graph_fwd_bwd_total": 7.5, "graph_fwd": 2.0, "peak_mib": 120.0},
        "sc-all": {"graph_fwd_bwd": 6.5, "graph_fwd_bwd_total": 7.2, "eager_fwd_bwd": 6.0,
                   "eager_fwd_bwd_total": 6.7, "peak_mib": 130.0},
    }


def test_speedups_take_the_best_dense_and_include_per_step_costs():
    s = summarise(results())
    assert s["dense_fwd_bwd_ms"] == 9.0  # best of eager and graph replay
    assert s["best_fwd_bwd"] == "sc-all/eager" and s["best_fwd_bwd_ms"] == 6.7  # totals, not the bare micro-batch
    assert s["speedup_fwd_bwd"] == pytest.approx(9.0 / 6.7)
    assert s["speedup_fwd_bwd_no_step"] == pytest.approx(9.0 / 6.0)
    assert s["x_sc-fwd-dx_graph_fwd_bwd"] == pytest.approx(9.0 / 7.5)
    assert s["speedup_fwd"] == pytest.approx(3.0 / 2.0)


def test_rounds_merge_to_medians_and_totals_add_the_amortised_step():
    rounds = [{"variant": "sc-all", "graph_fwd_bwd": t, "compress_ms": 0.4, "refresh_step_ms": r, "peak_mib": m,
               "refresh_fused": True} for t, r, m in ((7.0, 1.0, 130.0), (6.0, 3.0, 140.0), (6.5, 2.0, 150.0))]
    merged = with_totals(merge_rounds(rounds), Settings(accum=8, refresh_interval=2))
    assert merged["graph_fwd_bwd"] == 6.5 and merged["refresh_step_ms"] == 2.0 and merged["rounds"] == 3
    assert merged["peak_mib"] == 130.0 and merged["refresh_fused"] is True  # from the first round
    assert merged["per_step_amortised_ms"] == pytest.approx((2.0 + 0.4) / 2 / 8)
    assert merged["graph_fwd_bwd_total"] == pytest.approx(6.5 + 0.15)
    assert "graph_fwd_bwd_total" not in with_totals({"graph_fwd_bwd": 9.0}, Settings())  # dense: no step cost
    # every step also decays the gradients; graph replay also copies the new operands into its buffers
    timed = {**rounds[0], "eager_fwd_bwd": 6.8, "decay_ms": 0.08, "graph_copy_ms": 0.16}
    totals = with_totals(timed, Settings(accum=8, refresh_interval=1))
    assert totals["eager_fwd_bwd_total"] == pytest.approx(6.8 + (1.0 + 0.08) / 8)
    assert totals["graph_fwd_bwd_total"] == pytest.approx(7.0 + (1.0 + 0.08 + 0.16) / 8)


def row(d: int, tokens: int, speedup: float) -> dict:
    return {"kind": "ffn", "d": d, "tokens": tokens, "speedup_fwd_bwd": speedup, "best_fwd_bwd": "sc-all/graph",
            "x_sc-all_graph_fwd_bwd": 1.25, "x_sc-all_eager_fwd_bwd": 1.3, "variants": results()}


def test_merge_keeps_the_last_run_of_each_shape(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"env": ENV, "args": {}, "rows": [row(768, 8192, 0.9), row(1024, 8192, 1.0)]}))
    second.write_text(json.dumps({"env": ENV, "args": {"precision": "amp"}, "rows": [row(768, 8192, 1.1)]}))
    rows, envs = merge([first, second])
    assert [(r["d"], r["speedup_fwd_bwd"], r["source"]) for r in rows] == [(768, 1.1, "b.json"), (1024, 1.0, "a.json")]
    assert [e["precision"] for e in envs] == ["bf16", "amp"]  # runs from before --precision count as bf16
    assert "not included" in step_cost_note(rows)  # these runs did not time the masked decay
    timed = {**row(768, 8192, 1.0), "variants": {k: {**v, "decay_ms": 0.1} for k, v in results().items()}}
    assert "with the masked gradient decay" in step_cost_note([timed])


def test_outputs_name_the_environment_and_the_peak_memory(tmp_path):
    write_outputs(tmp_path, "t", ENV, {"d": [768]}, [row(768, 16384, 1.25)], "title", ["a note"])
    md = (tmp_path / "t.md").read_text()
    assert "test GPU" in md and "python3 accelerate/bench_ffn.py" in md and "a note" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| ffn | 768"))
    cells = [c.strip() for c in line.strip("| ").split("|")]
    # dense peak, the fastest variant's (sc-all's 130, not sc-fwd-dx's lower 120), the training path's best ratio
    assert "1.250" in cells and cells[-4:] == ["100.000", "130.000", "1.300", "130.000"]
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["d"] == 768
    assert (tmp_path / "t.png").stat().st_size > 0


def test_profile_sorts_kernels_into_kinds():
    """The profile's kinds: cuSPARSELt GEMMs are sparse even though their names also say 'gemm'."""
    times = {"sm90_xmma_sparse_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64": 8.0,
             "nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_NTT": 6.5, "_cols_kernel": 0.7, "_transposable_kernel": 0.5,
             "void at::native::vectorized_elementwise_kernel<8, at::native::GeluBackwardCUDAKernelImpl": 0.48,
             "Memcpy DtoD (Device -> Device)": 0.01, "some_new_kernel": 0.02}
    kinds = by_kind(times)
    assert kinds["sparse GEMM"] == 8.0 and kinds["dense GEMM"] == 6.5 and kinds["GELU"] == 0.48
    assert kinds["MVUE / compress (Triton)"] == pytest.approx(1.2) and kinds["other"] == 0.02
    assert kind_of("Memcpy DtoD (Device -> Device)") == "copy / cast / fill"
    assert [k["ms"] for k in top_kernels(times, 2)] == [8.0, 6.5]
