"""JSONL / fan-out / W&B-fallback loggers, read_jsonl, progress bar and the PNG plots."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

from sparse_core.train import metrics as metrics_mod
from sparse_core.train.metrics import (
    FanoutLogger,
    JsonlLogger,
    NullLogger,
    WandbLogger,
    build_logger,
    progress_bar,
    read_jsonl,
)
from sparse_core.train.plots import plot_metrics, plot_prefix

HAS_WANDB = importlib.util.find_spec("wandb") is not None


def test_jsonl_round_trip_and_append_on_resume(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    lg = JsonlLogger(path)
    lg.log({"train/loss": torch.tensor(2.5), "lr": np.float32(0.5), "n": 3}, step=0)
    lg.log({"train/loss": 2.0}, step=1)
    lg.close()
    lg = JsonlLogger(path)  # resume appends
    lg.log({"train/loss": 1.5}, step=2)
    lg.close()
    recs = read_jsonl(path)
    assert recs == [{"step": 0, "train/loss": 2.5, "lr": 0.5, "n": 3.0}, {"step": 1, "train/loss": 2.0},
                    {"step": 2, "train/loss": 1.5}]


def test_jsonl_torn_last_line_is_repaired(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "a": 1.0}) + "\n" + '{"step": 1, "a"')  # crash mid-write
    lg = JsonlLogger(path)
    lg.log({"a": 3.0}, step=1)
    lg.close()
    with pytest.warns(UserWarning, match=":2: skipping"):
        recs = read_jsonl(path)
    assert recs == [{"step": 0, "a": 1.0}, {"step": 1, "a": 3.0}]


def test_logger_rejects_bad_input(tmp_path):
    lg = JsonlLogger(tmp_path / "m.jsonl")
    with pytest.raises(TypeError, match="'bad'"):
        lg.log({"bad": "text"}, step=0)
    with pytest.raises(TypeError, match="'vec'"):
        lg.log({"vec": torch.ones(2)}, step=0)
    with pytest.raises(ValueError, match="step"):
        lg.log({"a": 1.0}, step=-1)
    with pytest.raises(ValueError, match="'step'"):
        lg.log({"step": 1.0}, step=1)
    lg.close()
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


def test_fanout_and_build_logger(tmp_path):
    a, b = JsonlLogger(tmp_path / "a.jsonl"), JsonlLogger(tmp_path / "b.jsonl")
    fan = FanoutLogger(a, b)
    fan.log({"x": 1.0}, step=5)
    fan.close()
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl") == [{"step": 5, "x": 1.0}]
    with pytest.raises(TypeError):
        FanoutLogger(object())

    assert isinstance(build_logger(tmp_path / "r0", "offline", "p", "r", {}, enabled=False), NullLogger)
    assert not (tmp_path / "r0").exists()
    lg = build_logger(tmp_path / "r1", "disabled", "p", "r", {"a": 1}, enabled=True)
    lg.log({"x": 2.0}, step=0)
    lg.close()
    assert read_jsonl(tmp_path / "r1" / "metrics.jsonl") == [{"step": 0, "x": 2.0}]
    with pytest.raises(ValueError, match="sometimes"):
        build_logger(tmp_path, "sometimes", "p", "r", {}, enabled=True)


@pytest.mark.skipif(HAS_WANDB, reason="checks the fallback when wandb is not installed")
def test_offline_without_wandb_warns_once_and_keeps_jsonl(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_mod, "_warned_no_wandb", False)
    with pytest.warns(UserWarning, match="wandb is not installed"):
        lg = build_logger(tmp_path / "a", "offline", "p", "r", {}, enabled=True)
    assert isinstance(lg, JsonlLogger)
    lg.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_logger(tmp_path / "b", "offline", "p", "r", {}, enabled=True).close()
    with pytest.raises(ImportError, match="pip install wandb"):
        build_logger(tmp_path / "c", "online", "p", "r", {}, enabled=True)
    with pytest.raises(ImportError, match="pip install wandb"):
        WandbLogger("p", "r", {}, mode="offline")
    WandbLogger("p", "r", {}, mode="disabled").log({"x": 1.0}, step=0)


def test_progress_bar():
    bar = progress_bar(10, initial=4, enabled=True, desc="train")
    bar.update()
    bar.set_postfix(loss=1.0)
    assert bar.n == 5 and bar.total == 10 and not bar.disable
    bar.close()
    hidden = progress_bar(10, initial=0, enabled=False)
    hidden.update()
    assert hidden.disable
    hidden.close()
    with pytest.raises(ValueError):
        progress_bar(3, initial=5, enabled=False)


def _write_run(path):
    lg = JsonlLogger(path)
    for step in range(6):
        lg.log({"train/loss": 3.0 - 0.1 * step, "sparse/flip_rate/h.0.mlp.c_fc": 0.1 / (step + 1),
                "sparse/flip_rate/h.1.mlp.c_fc": 0.2 / (step + 1)}, step=step)
        if step % 2 == 0:
            lg.log({"val/loss": 3.1 - 0.1 * step}, step=step)
    lg.close()


def test_plots_write_pngs(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    _write_run(jsonl)
    with pytest.warns(UserWarning, match="'lr'"):
        out = plot_metrics(jsonl, tmp_path / "plots", {"loss": ["train/loss", "val/loss"], "lr": ["lr"]})
    assert out == [tmp_path / "plots" / "loss.png"]
    assert out[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out[0].stat().st_size > 5000
    png = plot_prefix(jsonl, tmp_path / "plots" / "flip.png", "sparse/flip_rate/")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.warns(UserWarning, match="nothing plotted"):
        assert plot_prefix(jsonl, tmp_path / "none.png", "nope/") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match="panel"):
        plot_metrics(jsonl, tmp_path, {"loss": "train/loss"})
