"""The HF `datasets` code paths (corpus and GLUE), run against a stand-in module: no download in tests."""

import sys
import types

import pytest

from cramming.config import DataConfig
from cramming.data import iter_documents
from cramming.eval.tasks import TASKS, load_split


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []

    def load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        if name == "glue":
            return [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3, "idx": i} for i in range(5)]
        return iter([{"text": " first doc "}, {"text": ""}, {"text": "second"}, {"text": "third"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hf_corpus(fake_datasets):
    cfg = DataConfig(source="hf", hf_name="wikitext", hf_config="wikitext-103-raw-v1", max_documents=2)
    assert list(iter_documents(cfg)) == ["first doc", "second"]
    assert fake_datasets == [("wikitext", "wikitext-103-raw-v1", "train", True)]
    with pytest.raises(ValueError, match="no field 'body'"):
        list(iter_documents(DataConfig(source="hf", hf_name="x", hf_text_field="body")))


def test_hf_glue(fake_datasets):
    rows = load_split(TASKS["mnli"], "dev", None, max_rows=4)
    assert fake_datasets == [("glue", "mnli", "validation_matched", False)]
    assert [(r.text_a, r.text_b, r.label) for r in rows[:2]] == [("p0", "h0", 0.0), ("p1", "h1", 1.0)]
    assert len(rows) == 4


def test_hf_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets"):
        load_split(TASKS["qqp"], "train", None)
