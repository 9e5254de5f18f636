"""Shared helpers for the nanogpt recipe tests: tiny configs and prepared tiny data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nanogpt.config import CONFIG_DIR, TrainConfig
from sparse_core.train import load_config

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SPARSE_CORE_SHARED_DATA", REPO / ".." / "shared" / "data")).resolve()

# A model small enough that a step takes milliseconds on one CPU core.
MICRO = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "data.batch_size=4",
         "train.warmup_steps=2", "train.eval_iters=2", "train.log_interval=1", "log.wandb=disabled",
         "log.progress=false"]


def _micro_config(data_dir: Path, out_dir: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG_DIR, "tiny",
                       [*MICRO, f"data.dir={data_dir}", f"out_dir={out_dir}", *overrides])


@pytest.fixture
def micro_config():
    """micro_config(data_dir, out_dir, *overrides) -> a TrainConfig of a model that trains in milliseconds."""
    return _micro_config


@pytest.fixture(scope="session")
def micro_overrides() -> list[str]:
    return list(MICRO)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} not found (set SPARSE_CORE_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def stdlib_char(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default corpus, prepared once per session."""
    from nanogpt.data.prepare import prepare

    return prepare("stdlib_char", root=tmp_path_factory.mktemp("data"))
