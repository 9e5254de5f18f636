"""Faults in the Cramming recipe (impossible configs: test_cramming_train.py): clear errors for
missing, empty or malformed text and GLUE files, and non-finite steps skipped, counted, then stopped."""

import itertools

import pytest
import torch

from cramming.config import CONFIG_DIR, CrammingConfig
from cramming.data import build_corpus, stdlib_docstrings
from cramming.eval.tasks import TASKS, read_tsv
from cramming.tokenizer import train_wordpiece
from cramming.train import train
from sparse_core.train import CheckpointManager, TrainingDiverged, load_config, read_jsonl


def test_missing_and_empty_text_files(tmp_path):
    def corpus(path):
        cfg = load_config(CrammingConfig, CONFIG_DIR, "tiny", ["data.source=files", f"data.path={path}"])
        return build_corpus(cfg.data, tmp_path / "run", 0)

    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        corpus(tmp_path / "nowhere.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match=r"empty.txt gave no documents"):
        corpus(tmp_path / "empty.txt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"no text files .* under .*folder"):
        corpus(tmp_path / "folder")


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("sentence\tlabel\n", "holds no examples"),
    ("sentence\tlabel\na fine film\t1\njust one column\n", r"dev.tsv:3: 1 columns"),
    ("sentence\tlabel\na fine film\tmaybe\n", r"dev.tsv:2: label 'maybe' is not a number"),
    ("text\tscore\na fine film\t1\n", r"lacks the columns"),
])
def test_malformed_glue_tsv(tmp_path, text, match):
    path = tmp_path / "dev.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_tsv(path, TASKS["sst2"])


def test_nonfinite_steps_skipped_then_stopped(tmp_path, monkeypatch):
    train_wordpiece(itertools.islice(stdlib_docstrings(), 200), vocab_size=256).save(tmp_path / "tok")
    base = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
            "model.max_position=32", "data.seq_len=32", "data.max_chars=30000", f"data.tokenizer={tmp_path / 'tok'}",
            "optim.batch_size=8", "optim.micro_batch_size=8", "progress=false", "eval_interval=0", "log_interval=1",
            "budget.steps=5", f"out_dir={tmp_path}"]
    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@1")
    assert train(load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=one"]))["steps"] == 5
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "one" / "metrics.jsonl") if "train/loss" in r}
    assert [rows[s]["train/skipped"] for s in range(1, 6)] == [0, 1, 0, 0, 0] and rows[5]["train/skipped_steps"] == 1

    monkeypatch.setenv("SPARSE_CORE_FAULT", "nan_loss@1:100")
    cfg = load_config(CrammingConfig, CONFIG_DIR, "tiny", base + ["run_name=bad", "max_bad_steps=3"])
    with pytest.raises(TrainingDiverged, match=r"(?s)3 optimizer steps in a row \(steps 1..3\).*ckpt_00000004.pt"):
        train(cfg)
    step, state = CheckpointManager(tmp_path / "bad" / "checkpoints").load_latest()
    assert step == 4 and state["guard"] == {"total": 3, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values())
