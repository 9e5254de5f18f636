"""scripts/gpu_evidence.sh: each job expands to the command its committed results name (run with stubs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_evidence.sh"

# the script's arrays and functions, with python3/torchrun/corpus replaced by stubs that print their arguments
HARNESS = r"""
set -u
RUNS=runs SHARED=shared STDLIB=stdlib SITE=site LONG_STEPS=2000 AB_STEPS=400
source <(sed -n '/^GPT=(/,/^TORCHRUN=/p;/^sparse_parts() {/,/^}/p;/^job() {/,/^}/p' "$1")
python3() { echo "python3 $*"; }
torchrun() { echo "torchrun $*"; }
corpus() { :; }
job "$2"
"""


def expand(job: str) -> tuple[int, str]:
    proc = subprocess.run(["bash", "-c", HARNESS, "harness", str(SCRIPT), job], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("job, expected", [
    ("ab-2by4", ["method=2by4", "sparse.mask_refresh_interval=40", "run_name=ab-2by4"]),
    ("ab-2by4+r1+l2e-4", ["sparse.mask_refresh_interval=40 sparse.mask_refresh_interval=1 sparse.lambda_w=2e-4"]),
    ("ab-2by4+nomvue+magnitude", ["sparse.mvue=false sparse.mask_kind=magnitude"]),
    ("ab-srste", ["method=sr-ste run_name=ab-srste"]),
    ("ab-2by4-ref", ["sparse.backend=reference", "sparse.mask_refresh_interval=40"]),
    ("long-2by4+r40+l6e-5", ["train.max_steps=2000", "sparse.mask_refresh_interval=40 sparse.lambda_w=6e-5"]),
    ("ddp-2gpu", ["torchrun --standalone --nproc_per_node=2 -m nanogpt.train", "run_name=ddp-2gpu"]),
    ("deit-2by4", ["-m deit.train", "sparse.mask_refresh_interval=40"]),
    ("ffn-plans", ["accelerate/bench_ffn.py --tokens 16384", "--rounds 1", "--kinds ffn --name ffn-plans-gpu0"]),
    ("gated-plans", ["accelerate/bench_ffn.py", "--kinds gated --name gated-plans"]),
    ("block-amp", ["accelerate/bench_block.py", "--precision amp --variants dense sc-fwd-dx sc-fwd-dx-mvue sc-all "
                   "--name block-amp"]),
    ("ffn-profile", ["accelerate/profile_ffn.py --d 768 4096"]),
    ("block-grid", ["accelerate/bench_block.py --tokens 8192 65536 --d"]),
    ("gated-grid", ["accelerate/bench_ffn.py --tokens 8192 65536 --d", "--kinds gated --name gated-grid-gpu0"]),
])
def test_jobs_expand_to_their_commands(job: str, expected: list[str]) -> None:
    code, out = expand(job)
    assert code == 0, out
    for piece in expected:
        assert piece in out, (piece, out)


def test_later_overrides_win_and_defaults_are_not_pinned() -> None:
    _, out = expand("long-2by4")  # the method's current defaults: no refresh or lambda override
    assert "mask_refresh_interval" not in out and "lambda_w" not in out
    _, out = expand("ab-2by4+r1")
    assert out.index("sparse.mask_refresh_interval=40") < out.index("sparse.mask_refresh_interval=1")


@pytest.mark.parametrize("job", ["ab-2by4+bogus", "no-such-job"])
def test_unknown_jobs_and_parts_fail(job: str) -> None:
    code, out = expand(job)
    assert code != 0 and "unknown" in out


def test_benchmark_files_name_the_gpu_they_ran_on() -> None:
    """The same benchmark job on both chains writes two sets of files (and logs), not one over the other."""
    proc = subprocess.run(["bash", "-c", "CUDA_VISIBLE_DEVICES=1 BENCH_ROUNDS=3 " + HARNESS, "harness", str(SCRIPT),
                           "block-plans"], capture_output=True, text=True, timeout=30)
    assert "--rounds 3" in proc.stdout and "--name block-plans-gpu1 " in proc.stdout, proc.stdout + proc.stderr
