"""GLUE: metrics against hand-checked values, the TSV readers on the shared files, and fine-tuning a
tiny checkpoint on a few hundred RTE / SST-2 rows."""

import json
from dataclasses import replace
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cramming.eval.glue import GlueConfig, evaluate, finetune, run_glue
from cramming.eval.metrics import accuracy, f1_binary, matthews_corr, pearson, spearman
from cramming.eval.table import results_table
from cramming.eval.tasks import TASKS, load_split, read_tsv
from cramming.model import CrammedBertConfig, CrammedBertForMaskedLM
from cramming.tokenizer import load_tokenizer

SHARED = Path(os.environ.get("SPARSE_CORE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
GLUE = SHARED / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f"shared GLUE data not found at {GLUE}")


def test_metrics_hand_checked():
    t, p = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # TP 2, TN 1, FP 1, FN 1
    assert accuracy(t, p) == pytest.approx(0.6)
    assert f1_binary(t, p) == pytest.approx(4 / 6)
    assert matthews_corr(t, p) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert matthews_corr([0, 0, 1], [0, 0, 0]) == 0.0  # undefined -> 0
    assert matthews_corr([0, 1, 2, 0], [0, 1, 2, 0]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / np.sqrt(5 * 26))
    # ties share the mean rank: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 3, 2, 4]))
    with pytest.raises(ValueError, match="equal length"):
        accuracy([1, 0], [1])


def test_metrics_match_sklearn_scipy():
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert matthews_corr(t, p) == pytest.approx(sk.matthews_corrcoef(t, p))
    assert f1_binary(t, p) == pytest.approx(sk.f1_score(t, p))
    t3, p3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert matthews_corr(t3, p3) == pytest.approx(sk.matthews_corrcoef(t3, p3))
    x, y = rng.integers(0, 6, 200).astype(float), rng.normal(size=200)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


@needs_glue
def test_tsv_readers_on_shared_files():
    rte = read_tsv(GLUE / "RTE" / "dev.tsv", TASKS["rte"])
    assert len(rte) == 277 and sum(e.label == 0 for e in rte) == 146  # entailment = 0
    mrpc = load_split(TASKS["mrpc"], "dev", GLUE)
    assert len(mrpc) == 408 and sum(e.label == 1 for e in mrpc) == 279  # BOM-prefixed header parsed
    assert mrpc[0].text_a.startswith("He said the foodservice pie business")
    cola = load_split(TASKS["cola"], "dev", GLUE)
    assert len(cola) == 1043 and sum(e.label == 1 for e in cola) == 721 and cola[0].text_b is None
    stsb = load_split(TASKS["stsb"], "dev", GLUE, max_rows=3)
    assert stsb[0].label == 5.0 and stsb[0].text_b == "A man wearing a hard hat is dancing."
    sst2 = load_split(TASKS["sst2"], "dev", GLUE)
    assert len(sst2) == 872 and sum(e.label == 1 for e in sst2) == 444
    with pytest.raises(FileNotFoundError):
        load_split(TASKS["qnli"], "dev", GLUE)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    vocab = SHARED / "bert_base_uncased"
    if not vocab.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    torch.manual_seed(0)
    model = CrammedBertForMaskedLM(CrammedBertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=64))
    out = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(out)
    load_tokenizer(vocab).save(out)
    return out


@needs_glue
def test_finetune_tiny_checkpoint_metric(tiny_checkpoint, tmp_path):
    cfg = GlueConfig(checkpoint=str(tiny_checkpoint), tasks=["rte", "sst2"], data_dir=str(GLUE), epochs=1, lr=1e-3,
                     batch_size=16, max_length=64, max_train_rows=200, max_eval_rows=100, out=str(tmp_path / "g.json"))
    cfg.validate()
    task = TASKS["sst2"]
    rows = load_split(task, "train", GLUE, 200)
    dev = load_split(task, "dev", GLUE, 100)
    model, tok = finetune(cfg, task, rows, torch.device("cpu"))
    got = evaluate(model, tok, task, dev, 7, 64, torch.device("cpu"))  # another batch size: padding must not matter
    # the same accuracy computed by hand, one unpadded example at a time
    model.eval()
    correct = 0
    with torch.no_grad():
        for e in dev:
            ids = torch.tensor(tok.encode([e.text_a], max_length=64)["input_ids"])
            correct += int(model(ids).logits.argmax(-1).item() == int(e.label))
    assert got["accuracy"] == pytest.approx(correct / len(dev))
    # the whole CLI path: results file, GLUE average, table
    out = run_glue(cfg)
    saved = json.loads((tmp_path / "g.json").read_text())
    assert set(saved["tasks"]) == {"rte", "sst2"} and saved["tasks"]["rte"]["dev_rows"] == 100
    assert saved["glue_average"] == pytest.approx(np.mean([saved["tasks"][t]["accuracy"] for t in ("rte", "sst2")]))
    assert out["label"] and "| RTE (acc) |" in results_table([saved])
    # a max_length past the model's 64 positions is capped to them (rte pairs run past 64 word pieces)
    longer = run_glue(replace(cfg, tasks=["rte"], max_length=128, max_train_rows=16, max_eval_rows=16))
    assert longer["tasks"]["rte"]["dev_rows"] == 16


def test_glue_config_errors():
    with pytest.raises(ValueError, match="checkpoint"):
        GlueConfig().validate()
    with pytest.raises(ValueError, match="tasks"):
        GlueConfig(checkpoint="x", tasks=["wnli"]).validate()
