"""Helpers of the reliability tests (imported as `reliability_util`): run a recipe's CLI in a subprocess (with a SPARSE_CORE_FAULT), check a
checkpoint folder after a crash, compare checkpoints bit for bit."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any


from sparse_core.train import CheckpointManager, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# The points of the kill tests are drawn from this seed; set it to try other points (the test prints them).
SEED = int(os.environ.get("SPARSE_CORE_FAULT_SEED", "0"))


def run_recipe(module: str, args: list[str], fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m <module> *args` from the repo root, one thread, with SPARSE_CORE_FAULT=`fault` if given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SPARSE_CORE_FAULT", None)
    if fault:
        env["SPARSE_CORE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check_after_crash(directory: Path) -> int:
    """Every checkpoint file in `directory` loads (and verifies against the manifest); returns the newest step
    (0 when there is none yet: the run starts again from scratch)."""
    manager = CheckpointManager(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'not listed in manifest' after a kill between rename and manifest
        for path in sorted(directory.glob("ckpt_*.pt")):
            load_checkpoint(path)  # raises CheckpointError on a torn or mismatching file
        found = manager.load_latest()
    return 0 if found is None else found[0]


def final_state(directory: Path, step: int) -> dict[str, Any]:
    return load_checkpoint(directory / f"ckpt_{step:08d}.pt")[1]


def fault_rng(name: str) -> random.Random:
    """The generator that picks the kill points of test `name` (seeded, so a failure can be replayed)."""
    return random.Random(f"{SEED}:{name}")
