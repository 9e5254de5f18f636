"""Typed configs: a dataclass schema holds every default, YAML files and CLI overrides change a few.

    cfg = load_config(TrainConfig, "nanogpt/configs", "tiny", ["method=2by4", "train.max_steps=20"])

Composition goes through hydra's compose API (no `@hydra.main`: it changes cwd and logging), then the
result is merged onto `OmegaConf.structured(schema)`, which rejects unknown keys and wrong types.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from pathlib import Path
from typing import Any, Sequence, TypeVar

__all__ = ["ConfigError", "load_config", "config_to_dict", "parse_cli"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key, value or override is wrong; the message names it."""


def load_config(schema: type[T], config_dir: str | Path, config_name: str, overrides: Sequence[str] = ()) -> T:
    """Compose `config_dir/config_name.yaml` with hydra overrides onto dataclass `schema`; validate."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a sequence of strings, got the string {overrides!r}")
    config_dir = Path(config_dir).expanduser().resolve()
    name = config_name[: -len(".yaml")] if config_name.endswith(".yaml") else config_name
    if not config_dir.is_dir():
        raise ConfigError(f"config directory {str(config_dir)!r} does not exist")
    if not (config_dir / f"{name}.yaml").is_file():
        found = sorted(p.stem for p in config_dir.glob("*.yaml"))
        raise ConfigError(f"config file {str(config_dir / (name + '.yaml'))!r} does not exist; found {found}")

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    hydra_overrides = _force_add_keys(list(overrides), config_dir)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            composed = compose(config_name=name, overrides=hydra_overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{config_dir / name}.yaml with overrides {list(overrides)}: {e}") from e
    finally:
        GlobalHydra.instance().clear()
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), composed)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]  # omegaconf appends full_key/object_type lines
        raise ConfigError(f"{config_dir / name}.yaml, overrides {list(overrides)}: key {key!r}: {msg}") from e
    bad = _non_finite(cfg, "")
    if bad:
        raise ConfigError(f"{name}.yaml, overrides {list(overrides)}: values must be finite, got {', '.join(bad)}")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as e:  # TypeError: e.g. a method option of the wrong type
            raise ConfigError(f"{name}.yaml, overrides {list(overrides)}: {e}") from e
    return cfg  # type: ignore[return-value]


def _non_finite(value: Any, where: str) -> list[str]:
    """`key=value` of every NaN or infinite float in a config (dataclasses, dicts, lists): no setting takes one."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where}={value}"]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return []
    return [bad for key, v in items for bad in _non_finite(v, f"{where}.{key}" if where else key)]


def _force_add_keys(overrides: list[str], config_dir: Path) -> list[str]:
    """Turn plain `a.b=v` into `++a.b=v` so keys the YAML leaves to the schema defaults can be set.

    Config-group overrides (`model=small` where `config_dir/model/` exists) stay as they are; the
    structured merge afterwards still rejects keys the schema does not have.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    for o in overrides:
        if not isinstance(o, str):
            raise TypeError(f"override must be a string like 'train.max_steps=20', got {o!r}")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"bad override in {overrides}: {e}") from e
    out = []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            raise ConfigError(f"override {text!r} is a sweep; give one value")
        is_group = (config_dir / o.key_or_group.replace(".", "/")).is_dir()
        out.append(f"++{text}" if o.type == OverrideType.CHANGE and not is_group else text)
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain JSON-able dict of a dataclass (or DictConfig) config, for checkpoints and logs."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return _plain({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    if isinstance(cfg, dict):
        return _plain(cfg)
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        DictConfig = None
    if DictConfig is not None and isinstance(cfg, DictConfig):
        return _plain(OmegaConf.to_container(cfg, resolve=True))
    raise TypeError(f"config_to_dict needs a dataclass instance, dict or DictConfig, got {type(cfg).__name__}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-able")


def parse_cli(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Split `--config-name NAME` (or `--config-name=NAME`, `-cn NAME`) from hydra overrides."""
    name: str | None = None
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config-name", "-cn"):
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise ConfigError(f"{arg} needs a value, e.g. {arg} tiny")
            name = args[i + 1]
            i += 2
            continue
        if arg.startswith("--config-name="):
            name = arg.split("=", 1)[1]
            if not name:
                raise ConfigError("--config-name= needs a value, e.g. --config-name=tiny")
        elif arg.startswith("-"):
            raise ConfigError(f"unknown flag {arg!r}; give --config-name NAME and overrides like train.max_steps=20")
        else:
            overrides.append(arg)
        i += 1
    return name, overrides
