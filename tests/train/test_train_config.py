"""load_config / parse_cli / config_to_dict: defaults, YAML and CLI overrides, and every error path."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sparse_core.train.config import ConfigError, config_to_dict, load_config, parse_cli


@dataclass
class OptimCfg:
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class TrainCfg:
    max_steps: int = 100
    batch_size: int = 8
    out_dir: str = "out"


@dataclass
class RunCfg:
    method: str = "dense"
    seed: int = 0
    lambda_w: float | None = None
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)

    def validate(self) -> None:
        if self.train.max_steps <= 0:
            raise ValueError(f"train.max_steps must be > 0, got {self.train.max_steps}")


@pytest.fixture()
def cfg_dir(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text("seed: 1\n")
    (tmp_path / "tiny.yaml").write_text(
        "defaults:\n  - base\n  - _self_\n# tiny: a quick smoke run\ntrain:\n  max_steps: 20\noptim:\n  lr: 1.0e-3\n"
    )
    (tmp_path / "bad_key.yaml").write_text("train:\n  max_stepz: 3\n")
    (tmp_path / "bad_type.yaml").write_text("train:\n  max_steps: many\n")
    return tmp_path


def test_defaults_and_yaml_override(cfg_dir):
    cfg = load_config(RunCfg, cfg_dir, "tiny")
    assert isinstance(cfg, RunCfg) and isinstance(cfg.train, TrainCfg)
    assert cfg.train.max_steps == 20 and cfg.optim.lr == 1e-3 and cfg.seed == 1  # yaml + defaults list
    assert cfg.train.batch_size == 8 and cfg.method == "dense" and cfg.optim.betas == [0.9, 0.95]  # schema


def test_cli_overrides_including_keys_the_yaml_leaves_out(cfg_dir):
    cfg = load_config(RunCfg, cfg_dir, "tiny.yaml", ["method=2by4", "train.max_steps=50", "train.batch_size=2",
                                                      "lambda_w=2e-4", "optim.betas=[0.8,0.99]"])
    assert cfg.method == "2by4" and cfg.train.max_steps == 50 and cfg.train.batch_size == 2
    assert cfg.lambda_w == 2e-4 and cfg.optim.betas == [0.8, 0.99]


def test_unknown_keys_are_named(cfg_dir):
    with pytest.raises(ConfigError, match="max_stepz"):
        load_config(RunCfg, cfg_dir, "bad_key")
    with pytest.raises(ConfigError, match="nope"):
        load_config(RunCfg, cfg_dir, "tiny", ["train.nope=1"])


def test_wrong_types_are_named(cfg_dir):
    with pytest.raises(ConfigError, match="many"):
        load_config(RunCfg, cfg_dir, "bad_type")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(RunCfg, cfg_dir, "tiny", ["train.batch_size=lots"])


def test_missing_file_and_dir(cfg_dir, tmp_path):
    with pytest.raises(ConfigError, match="huge.yaml"):
        load_config(RunCfg, cfg_dir, "huge")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunCfg, tmp_path / "nowhere", "tiny")
    with pytest.raises(TypeError, match="dataclass"):
        load_config(dict, cfg_dir, "tiny")


def test_bad_override_syntax(cfg_dir):
    with pytest.raises(ConfigError):
        load_config(RunCfg, cfg_dir, "tiny", ["train.max_steps"])
    with pytest.raises(ConfigError, match="sweep"):
        load_config(RunCfg, cfg_dir, "tiny", ["seed=1,2"])


def test_validate_hook_becomes_config_error(cfg_dir):
    with pytest.raises(ConfigError, match="max_steps must be > 0"):
        load_config(RunCfg, cfg_dir, "tiny", ["train.max_steps=0"])


def test_repeated_loads_are_independent(cfg_dir):
    a = load_config(RunCfg, cfg_dir, "tiny", ["seed=5"])
    b = load_config(RunCfg, cfg_dir, "tiny")
    assert a.seed == 5 and b.seed == 1


def test_config_to_dict_is_plain_json(cfg_dir):
    cfg = load_config(RunCfg, cfg_dir, "tiny")
    d = config_to_dict(cfg)
    assert d["train"]["max_steps"] == 20 and d["optim"]["betas"] == [0.9, 0.95]
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(TypeError):
        config_to_dict(object())


def test_parse_cli():
    assert parse_cli(["--config-name", "tiny", "method=2by4", "train.max_steps=50"]) == (
        "tiny", ["method=2by4", "train.max_steps=50"])
    assert parse_cli(["a=1", "--config-name=124M"]) == ("124M", ["a=1"])
    assert parse_cli(["-cn", "small"]) == ("small", [])
    assert parse_cli([]) == (None, [])
    with pytest.raises(ConfigError, match="--config-name"):
        parse_cli(["--config-name"])
    with pytest.raises(ConfigError, match="--steps"):
        parse_cli(["--steps", "5"])


@dataclass
class ModelCfg:
    n_layer: int = 12
    n_embd: int = 768


@dataclass
class GroupedCfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    seed: int = 0


def test_config_group_override(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "small.yaml").write_text("n_layer: 2\n")
    (tmp_path / "model" / "wide.yaml").write_text("n_layer: 4\nn_embd: 1024\n")
    (tmp_path / "run.yaml").write_text("defaults:\n  - model: small\n  - _self_\nseed: 3\n")
    cfg = load_config(GroupedCfg, tmp_path, "run")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.seed) == (2, 768, 3)
    cfg = load_config(GroupedCfg, tmp_path, "run", ["model=wide", "model.n_embd=512"])
    assert (cfg.model.n_layer, cfg.model.n_embd) == (4, 512)
    with pytest.raises(ConfigError, match="huge"):
        load_config(GroupedCfg, tmp_path, "run", ["model=huge"])



@dataclass
class TypedCfg:
    option: int = 1

    def validate(self) -> None:
        if self.option == 3:
            raise TypeError("option must not be 3")


def test_non_finite_values_and_type_errors_are_config_errors(cfg_dir):
    """NaN / inf pass range checks written as `x < 0`: load_config refuses them in any field (nested, lists); a
    TypeError from validate() (e.g. a method option of the wrong type) is a ConfigError too."""
    with pytest.raises(ConfigError, match=r"values must be finite, got optim.lr=nan"):
        load_config(RunCfg, cfg_dir, "tiny", ["optim.lr=nan"])
    with pytest.raises(ConfigError, match=r"lambda_w=-inf, optim.betas.1=inf"):
        load_config(RunCfg, cfg_dir, "tiny", ["lambda_w=-inf", "optim.betas=[0.9,inf]"])
    (cfg_dir / "typed.yaml").write_text("option: 3\n")
    with pytest.raises(ConfigError, match="option must not be 3"):
        load_config(TypedCfg, cfg_dir, "typed")
