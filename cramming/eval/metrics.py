"""GLUE metrics in plain numpy: accuracy, binary F1, Matthews correlation, Pearson and Spearman."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["accuracy", "f1_binary", "matthews_corr", "pearson", "spearman", "METRICS"]


def _pair(y_true: Sequence, y_pred: Sequence, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true, dtype=dtype), np.asarray(y_pred, dtype=dtype)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    return a, b


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    a, b = _pair(y_true, y_pred)
    return float((a == b).mean())


def f1_binary(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """F1 of the positive class 1: 2 TP / (2 TP + FP + FN); 0 when there is no positive at all."""
    a, b = _pair(y_true, y_pred)
    tp = int(((a == 1) & (b == 1)).sum())
    fp = int(((a != 1) & (b == 1)).sum())
    fn = int(((a == 1) & (b != 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corr(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Matthews correlation (multiclass form from the confusion matrix); 0 when it is undefined."""
    a, b = _pair(y_true, y_pred)
    classes = np.union1d(a, b)
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(conf, (np.searchsorted(classes, a), np.searchsorted(classes, b)), 1)
    t, p = conf.sum(1), conf.sum(0)  # true / predicted count per class
    n, correct = conf.sum(), np.trace(conf)
    denom = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return 0.0 if denom == 0 else float((correct * n - t @ p) / denom)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _pair(x, y, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return 0.0 if denom == 0 else float(a @ b / denom)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    start = 0
    for end in range(1, len(v) + 1):
        if end == len(v) or sorted_v[end] != sorted_v[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _pair(x, y, np.float64)
    return pearson(_ranks(a), _ranks(b))


METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews_corr, "pearson": pearson,
           "spearman": spearman}
