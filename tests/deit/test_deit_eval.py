"""DeiT eval tools on a tiny checkpoint: top-1/top-5 CLI, mask verification, dense export."""

import json

import numpy as np
import pytest
import torch

from deit.config import DeiTConfig
from deit.eval import evaluate, export, verify
from deit.train import CONFIG_DIR, train
from sparse_core import SparseLinear
from sparse_core.train.config import load_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deit_eval")
    rng = np.random.default_rng(1)
    np.savez(tmp / "images.npz", x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8),
             y_train=rng.integers(0, 3, 64), x_test=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
             y_test=rng.integers(0, 3, 24), class_names=np.array(["a", "b", "c"]))
    cfg = load_config(DeiTConfig, CONFIG_DIR, "tiny", [
        "data.source=npz", f"data.path={tmp / 'images.npz'}", "data.img_size=16", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "batch_size=16", "max_steps=3", "ema=true", "ema_decay=0.5",
        "eval_interval=3", "ckpt_interval=3", f"out_dir={tmp}", "run_name=r"])
    result = train(cfg)
    return tmp / "r" / "ckpt" / "ckpt_00000003.pt", result


def test_evaluate_cli_matches_training(run, capsys):
    ckpt, result = run
    got = evaluate.main([str(ckpt)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["top1"] == got["top1"]
    assert got["images"] == 24 and 0.0 <= got["top1"] <= got["top5"] <= 100.0
    assert got["top1"] == pytest.approx(result["val/top1"]) and got["loss"] == pytest.approx(result["val/loss"])
    ema = evaluate.main([str(ckpt), "--ema"])
    assert ema["top1"] == pytest.approx(result["val/ema_top1"])


def test_verify_passes_then_catches_a_broken_mask(run):
    ckpt, _ = run
    report = verify.main([str(ckpt)])
    assert report["ok"] and report["sparse_layers"] == 4 and report["forward_max_abs_diff"] <= 1e-4
    assert all(r["mask_is_transposable"] for r in report["layers"].values())  # 2by4 masks
    model, cfg, _ = evaluate.load_checkpoint_model(ckpt)
    layer = next(m for m in model.modules() if isinstance(m, SparseLinear))
    layer.mask[0, :4] = True  # 4 of 4 kept: not 2:4
    broken = verify.verify_model(model, cfg.data.img_size)
    assert not broken["ok"] and broken["failures"]
    for m in model.modules():
        if isinstance(m, SparseLinear):
            m.mask.copy_(m.compute_mask())
            m.mode = "dense"  # e.g. after 2by4's dense fine-tuning
    assert verify.verify_model(model, cfg.data.img_size)["ok"]
    assert not verify.verify_model(model, cfg.data.img_size, require_sparse=True)["ok"]


def test_dense_export_reloads_in_timm(run, tmp_path):
    ckpt, _ = run
    result = export.main([str(ckpt), "--out", str(tmp_path)])
    assert result["max_abs_logit_diff"] <= 1e-4
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["timm_name"] == "deit_tiny_patch16_224" and spec["class_names"] == ["a", "b", "c"]
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "model.safetensors"))
    w = weights["blocks.0.mlp.fc1.weight"]
    assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2  # the exported FFN weight is 2:4


def test_semi_structured_export_needs_cuda(run, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    ckpt, _ = run
    with pytest.raises(SystemExit) as exit_info:  # one line (argparse's error), before the checkpoint is loaded
        export.main([str(ckpt), "--out", str(tmp_path), "--format", "semi-structured"])
    assert exit_info.value.code == 2
    with pytest.raises(RuntimeError, match="CUDA"):  # the function refuses too
        export.export_semi_structured(torch.nn.Linear(4, 4), None, tmp_path)
