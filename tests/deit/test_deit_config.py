"""DeiT config: every YAML loads, bad keys/types/values are ConfigErrors naming the key."""

import pytest

from deit.config import DeiTConfig, config_from_dict
from deit.train import CONFIG_DIR
from sparse_core.train.config import ConfigError, config_to_dict, load_config

NEEDS_PATH = {"deit_tiny", "deit_small", "deit_base", "cifar10_subset"}


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_config_loads(name):
    overrides = ["data.path=/some/where"] if name in NEEDS_PATH else []
    cfg = load_config(DeiTConfig, CONFIG_DIR, name, overrides)
    assert isinstance(cfg, DeiTConfig)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_tiny_is_the_cpu_demo():
    cfg = load_config(DeiTConfig, CONFIG_DIR, "tiny", [])
    assert (cfg.data.source, cfg.device, cfg.method) == ("digits", "cpu", "2by4")
    assert cfg.model.embed_dim % 4 == 0


@pytest.mark.parametrize("override, needle", [
    ("model.nme=x", "nme"),                   # unknown key
    ("batch_size=many", "batch_size"),        # wrong type
    ("data.source=mnist", "data.source"),
    ("method=magic", "method"),
    ("sparse.no_such_option=1", "no_such_option"),
    ("model.patch_size=5", "patch_size"),     # does not divide 32
    ("batch_size=15", "even batch_size"),     # mixup pairs
    ("optim.opt=sgd", "optim.opt"),
    ("method=step optim.opt=lion", "adamw"),
    ("optim.warmup_epochs=99", "warmup_epochs"),
    ("model.name=deit_small_distilled_patch16_224", "distilled"),
    ("data.source=npz", "data.path"),
    ("sparse.mask_refresh_interval=0", "mask_refresh_interval"),
    ("sparse.dense_ft_fraction=1.5", "dense_ft_fraction"),
    ("sparse.dense_ft_fraction=-0.5", "dense_ft_fraction"),
    ("model.embed_dim=30 model.num_heads=2", "multiples of 4"),
    ("model.mlp_ratio=4.1", "multiples of 4"),
    ("max_bad_steps=0", "max_bad_steps"),
    ("max_bad_steps=1.5", "max_bad_steps"),
])
def test_bad_values_are_config_errors(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(DeiTConfig, CONFIG_DIR, "tiny", override.split())


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="nope"):
        load_config(DeiTConfig, CONFIG_DIR, "nope", [])


def test_checkpoint_config_mismatch_is_value_error():
    d = config_to_dict(DeiTConfig())
    d["model"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict(d)
