"""The eval companion on a tiny trained checkpoint: loss/perplexity, 2:4 mask checks, sampling, exports."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from nanogpt.eval.checkpoint import compress_24, decompress_24, load_run
from nanogpt.eval.evaluate import check_masks, evaluate_checkpoint
from nanogpt.eval.export import export
from nanogpt.eval.sample import sample
from nanogpt.train import train
from sparse_core import SparseLinear, transposable_mask_24
from sparse_core.train import read_jsonl


@pytest.fixture(scope="module")
def run_dir(stdlib_char, tmp_path_factory):
    """A 4-step ste run (sparse to the end) with its val loss logged at step 4."""
    from nanogpt.config import CONFIG_DIR, TrainConfig
    from sparse_core.train import load_config

    out = tmp_path_factory.mktemp("eval_run")
    cfg = load_config(TrainConfig, CONFIG_DIR, "tiny", [
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "data.batch_size=4",
        "method=ste", "train.max_steps=4", "train.warmup_steps=1", "train.eval_interval=4", "train.eval_iters=3",
        "log.wandb=disabled", "log.progress=false", "log.plots=false", f"data.dir={stdlib_char}", f"out_dir={out}"])
    train(cfg)
    return cfg.run_dir


def _logged_val(run_dir) -> float:
    return [r["val/loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "val/loss" in r][-1]


def test_evaluate_reproduces_training_val_loss_and_checks_masks(run_dir) -> None:
    result = evaluate_checkpoint(run_dir)
    assert result["step"] == 4 and result["method"] == "ste"
    assert result["loss"] == pytest.approx(_logged_val(run_dir), abs=1e-6)  # same fixed windows
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert (result["sparse_layers"], result["dense_finetuned_layers"], result["masks_verified"]) == (4, 0, True)


def test_mask_check_catches_a_broken_mask(run_dir) -> None:
    model = load_run(run_dir).model
    layer = model.h[1].mlp.c_proj
    layer.mask[0, :4] = True  # 4 of 4 kept
    with pytest.raises(ValueError, match="h.1.mlp.c_proj.*not 2:4"):
        check_masks(model)


def test_sample_decodes_with_the_char_vocab(run_dir) -> None:
    texts = sample(run_dir, prompt="def ", max_new_tokens=30, num_samples=2, seed=1)
    assert len(texts) == 2 and all(t.startswith("def ") and len(t) == 34 for t in texts)
    assert texts == sample(run_dir, prompt="def ", max_new_tokens=30, num_samples=2, seed=1)


def test_compress_round_trip() -> None:
    w = torch.randn(8, 16)
    mask = transposable_mask_24(w)
    values, indices = compress_24(w * mask, mask)
    assert values.shape == (8, 8) and indices.shape == (8, 4) and indices.dtype == torch.uint8
    assert torch.equal(decompress_24(values, indices), w * mask)
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(w, torch.ones(8, 16, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["dense", "semi-structured"])
def test_exports_keep_the_loss(run_dir, tmp_path, kind) -> None:
    path = export(run_dir, tmp_path / kind, kind)
    reloaded = load_run(path)
    assert reloaded.method == "dense"
    assert not any(isinstance(m, SparseLinear) for m in reloaded.model.modules())
    sparse = load_run(run_dir).model
    for i in range(2):  # the FFN weights are exactly the masked sparse ones
        for name in ("c_fc", "c_proj"):
            src = getattr(sparse.h[i].mlp, name)
            assert torch.equal(getattr(reloaded.model.h[i].mlp, name).weight, src.effective_weight())
    state = torch.load(path, weights_only=True)["state"]
    assert ("compressed" in state) == (kind == "semi-structured")
    if kind == "semi-structured":
        assert "h.0.mlp.c_fc.weight" not in state["model"]
        assert state["compressed"]["h.0.mlp.c_fc"]["values"].shape == (128, 16)
    assert evaluate_checkpoint(path)["loss"] == pytest.approx(_logged_val(run_dir), abs=1e-5)


def test_cli_evaluate_prints_json(run_dir, repo) -> None:
    proc = subprocess.run([sys.executable, "-m", "nanogpt.eval", "evaluate", str(run_dir)], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["masks_verified"] is True


def test_semi_structured_sampling_needs_cuda_or_rewraps(run_dir, tmp_path) -> None:
    path = export(run_dir, tmp_path / "ss", "semi-structured")
    assert load_run(path).compressed == [f"h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            sample(path, prompt="def ", max_new_tokens=2, semi_structured=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_semi_structured_sampling_on_gpu(stdlib_char, tmp_path, micro_config) -> None:
    """Width 64 so every FFN weight meets cuSPARSELt's minimum shapes; trained on CPU, sampled on GPU."""
    cfg = micro_config(stdlib_char, tmp_path, "method=ste", "model.n_embd=64", "train.max_steps=2",
                       "train.warmup_steps=1", "log.plots=false", "device=cpu")
    train(cfg)
    path = export(cfg.run_dir, tmp_path / "ss", "semi-structured")
    texts = sample(path, prompt="def ", max_new_tokens=8, device="cuda", semi_structured=True)
    assert texts[0].startswith("def ") and len(texts[0]) == 12
