"""Config loading: every size file validates; unknown keys and bad values fail before training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nanogpt.config import CONFIG_DIR, TrainConfig
from sparse_core.train import ConfigError, load_config


@pytest.mark.parametrize("name", ["tiny", "124M", "350M", "774M", "1558M"])
def test_every_size_config_loads(name: str) -> None:
    cfg = load_config(TrainConfig, CONFIG_DIR, name, [])
    assert cfg.size == name
    assert cfg.model.n_embd % cfg.model.n_head == 0


def test_sizes_match_gpt2() -> None:
    shapes = {n: load_config(TrainConfig, CONFIG_DIR, n, []).model for n in ("124M", "350M", "774M", "1558M")}
    assert [(m.n_layer, m.n_head, m.n_embd) for m in shapes.values()] == [
        (12, 12, 768), (24, 16, 1024), (36, 20, 1280), (48, 25, 1600)]


def test_overrides_reach_every_section() -> None:
    cfg = load_config(TrainConfig, CONFIG_DIR, "tiny", [
        "method=sr-ste", "model.n_layer=3", "train.lr=0.01", "sparse.lambda_w=0.0003",
        "sparse.mask_refresh_interval=5", "sparse.dense_ft_fraction=0.5", "log.wandb=disabled"])
    assert (cfg.method, cfg.model.n_layer, cfg.train.lr, cfg.log.wandb) == ("sr-ste", 3, 0.01, "disabled")
    assert cfg.sparse.options() == {"lambda_w": 0.0003, "mask_refresh_interval": 5, "dense_ft_fraction": 0.5,
                                    "backend": "auto"}
    assert load_config(TrainConfig, CONFIG_DIR, "tiny", ["sparse.lambda_w=auto"]).sparse.lambda_w == "auto"
    never = load_config(TrainConfig, CONFIG_DIR, "tiny", ["sparse.dense_ft_fraction=never"]).sparse.options()
    assert never["dense_ft_fraction"] is None  # 2by4 without its dense fine-tuning phase


@pytest.mark.parametrize("override, words", [
    ("bogus=1", "bogus"),
    ("train.max_step=10", "max_step"),
    ("train.max_steps=ten", "max_steps"),
    ("method=3by8", "3by8"),
    ("model.n_head=5", "n_head"),
    ("train.dtype=fp8", "fp8"),
    ("sparse.lambda_w=lots", "lambda_w"),
    ("sparse.mask_refresh_interval=0", "mask_refresh_interval"),
    ("sparse.mask_kind=diagonal", "mask_kind"),
    ("sparse.dense_ft_fraction=sometimes", "dense_ft_fraction"),
    ("train.warmup_steps=1000", "warmup_steps"),
    ("log.wandb=cloud", "cloud"),
    ("resume=/no/such/ckpt.pt", "resume"),
    ("sparse.dense_ft_fraction=1.5", "dense_ft_fraction"),
    ("sparse.dense_ft_fraction=-0.1", "dense_ft_fraction"),
    ("model.n_embd=30 model.n_head=2", "multiple of 4"),
    ("train.max_bad_steps=0", "max_bad_steps"),
    ("train.max_bad_steps=many", "max_bad_steps"),
    ("train.ckpt_interval=0", "ckpt_interval"),
])
def test_bad_config_is_a_clear_error(override: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(TrainConfig, CONFIG_DIR, "tiny", override.split())


@pytest.mark.parametrize("overrides, words", [
    (["train.cuda_graph=true", "train.compile=true"], "exclude each other"),
    (["train.cuda_graph=true", "train.dtype=fp16"], "fp16"),
])
def test_cuda_graph_conflicts_are_clear_errors(overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(TrainConfig, CONFIG_DIR, "tiny", overrides)


def test_cli_reports_config_error_without_traceback(repo) -> None:
    proc = subprocess.run([sys.executable, "-m", "nanogpt.train", "train.nonsense=3"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "config error" in proc.stderr and "nonsense" in proc.stderr
    assert "Traceback" not in proc.stderr
