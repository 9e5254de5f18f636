"""The eight GLUE tasks: TSV readers for the GLUE folder layout and the HF `datasets` path (lazy)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["Task", "TASKS", "Example", "read_tsv", "load_split", "task_score"]


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: Optional[str]
    label: float  # class index, or the similarity score for STS-B


@dataclass(frozen=True)
class Task:
    """Where a task's columns are, its labels and metrics; `text_a` etc. are header names or indices."""

    name: str
    folder: str  # GLUE layout folder name
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # label strings in index order; None: numeric labels as they are
    metrics: tuple[str, ...]
    header: bool = True
    dev_file: str = "dev.tsv"
    hf_dev_split: str = "validation"
    hf_fields: tuple[str, Optional[str]] = ("sentence1", "sentence2")

    @property
    def num_labels(self) -> int:
        return 1 if "pearson" in self.metrics else (len(self.labels) if self.labels else 2)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cola", "CoLA", 3, None, 1, None, ("matthews",), header=False, hf_fields=("sentence", None)),
    Task("sst2", "SST-2", "sentence", None, "label", None, ("accuracy",), hf_fields=("sentence", None)),
    Task("mrpc", "MRPC", "#1 String", "#2 String", "Quality", None, ("accuracy", "f1")),
    Task("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    Task("qqp", "QQP", "question1", "question2", "is_duplicate", None, ("accuracy", "f1"),
         hf_fields=("question1", "question2")),
    Task("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
         ("accuracy",), dev_file="dev_matched.tsv", hf_dev_split="validation_matched",
         hf_fields=("premise", "hypothesis")),
    Task("qnli", "QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",),
         hf_fields=("question", "sentence")),
    Task("rte", "RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",)),
)}


def _label(task: Task, raw: str, where: str) -> float:
    raw = raw.strip()
    if task.labels is not None:
        if raw not in task.labels:
            raise ValueError(f"{where}: label {raw!r} is not one of {task.labels}")
        return float(task.labels.index(raw))
    try:
        return float(raw) if task.num_labels == 1 else float(int(raw))
    except ValueError:
        raise ValueError(f"{where}: label {raw!r} is not a number") from None


def read_tsv(path: str | Path, task: Task, max_rows: int | None = None) -> list[Example]:
    """Rows of a GLUE TSV (quoting off: sentences hold bare quotes; a UTF-8 BOM, as in MRPC, is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file {path} does not exist")
    out: list[Example] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        cols: dict[str | int, int] = {}
        if task.header:
            header = next(rows, None)
            if header is None:
                raise ValueError(f"{path} is empty; a GLUE {task.name} file starts with a header row")
            cols = {name: i for i, name in enumerate(header)}
            wanted = [c for c in (task.text_a, task.text_b, task.label) if c is not None]
            missing = [c for c in wanted if c not in cols]
            if missing:
                raise ValueError(f"{path}: header {header} lacks the columns {missing} of task {task.name}")
        index = (lambda c: cols[c]) if task.header else (lambda c: c)
        ia, il = index(task.text_a), index(task.label)
        ib = None if task.text_b is None else index(task.text_b)
        need = max(i for i in (ia, ib, il) if i is not None)
        for lineno, row in enumerate(rows, 2 if task.header else 1):
            if not row:
                continue
            if len(row) <= need:
                raise ValueError(f"{path}:{lineno}: {len(row)} columns, expected more than {need}")
            out.append(Example(row[ia], None if ib is None else row[ib], _label(task, row[il], f"{path}:{lineno}")))
            if max_rows is not None and len(out) >= max_rows:
                break
    if not out and max_rows != 0:
        raise ValueError(f"{path} holds no examples")
    return out


def _hf_split(task: Task, split: str, max_rows: int | None) -> list[Example]:
    try:
        import datasets
    except ImportError as e:
        raise ImportError("GLUE without data_dir needs the `datasets` package (pip install datasets), "
                          "or give data_dir=<folder in the GLUE layout>") from e
    ds = datasets.load_dataset("glue", task.name, split=split)
    a, b = task.hf_fields
    out = []
    for row in ds:
        out.append(Example(row[a], None if b is None else row[b], float(row["label"])))
        if max_rows is not None and len(out) >= max_rows:
            break
    return out


def load_split(task: Task, split: str, data_dir: str | Path | None, max_rows: int | None = None) -> list[Example]:
    """'train' or 'dev' of `task`: from `data_dir/<Folder>/{train,dev}.tsv`, or HF `datasets` if None."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    if data_dir is None:
        return _hf_split(task, "train" if split == "train" else task.hf_dev_split, max_rows)
    return read_tsv(Path(data_dir) / task.folder / ("train.tsv" if split == "train" else task.dev_file), task, max_rows)


def task_score(metrics: dict[str, float]) -> float:
    """The task's GLUE score: the mean of its metrics (MRPC/QQP acc+F1, STS-B Pearson+Spearman)."""
    return sum(metrics.values()) / len(metrics)
