"""DeiT models: timm ViTs built for every sparse_core method; torchvision/timm import beside CPU torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sparse_core
from deit.config import ModelConfig
from deit.models import build_model, create_vit
from sparse_core import SparseLinear
from sparse_core.train.step import optimizer_step

TINY = ModelConfig(name="deit_tiny_patch16_224", patch_size=8, embed_dim=32, depth=2, num_heads=2, drop_path=0.1)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", list(sparse_core.METHODS))
def test_every_method_builds_and_steps(method):
    torch.manual_seed(0)
    model, ctl = build_model(TINY, img_size=16, num_classes=5, method=method, total_steps=10)
    sparse = [n for n, m in model.named_modules() if isinstance(m, SparseLinear)]
    if method in ("dense", "half"):
        assert sparse == []
    else:
        assert sorted(sparse) == [f"blocks.{i}.mlp.fc{j}" for i in range(2) for j in (1, 2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl.bind_optimizer(optimizer)
    before = model.head.weight.detach().clone()
    for step in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        result = optimizer_step(model, optimizer, controller=ctl, clip_norm=1.0, step=step)
        assert not result.skipped and result.grad_norm > 0
    assert not torch.equal(before, model.head.weight)


def test_half_halves_the_ffn():
    dense = create_vit(TINY, 16, 5, "dense")
    half = create_vit(TINY, 16, 5, "half")
    assert dense.blocks[0].mlp.fc1.out_features == 128
    assert half.blocks[0].mlp.fc1.out_features == 64 == half.blocks[1].mlp.fc2.in_features


def test_standard_deit_sizes_small_images():
    model = create_vit(ModelConfig(name="deit_small_patch16_224", patch_size=4), 32, 10, "dense")
    assert model.embed_dim == 384 and model.patch_embed.num_patches == 64
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="not a timm model"):
        create_vit(ModelConfig(name="deit_nope"), 32, 10, "dense")


def test_timm_imports_beside_cpu_torch():
    code = ("import deit, timm, torchvision, torch\n"
            "from timm.data import create_transform, Mixup\n"
            "from timm.optim import create_optimizer_v2\n"
            "from timm.scheduler import create_scheduler_v2\n"
            "from torchvision.datasets import ImageFolder, CIFAR10\n"
            "import torchvision.extension as ext\n"
            "if not ext._has_ops():\n"
            "    try:\n"
            "        torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)\n"
            "    except RuntimeError as e:\n"
            "        assert \"Couldn't load custom C++ ops\" in str(e)\n"
            "    else:\n"
            "        raise AssertionError('nms ran without the C++ extension')\n"
            "print('ok', ext._has_ops())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
