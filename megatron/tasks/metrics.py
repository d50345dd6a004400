"""The official metrics of the downstream tasks, in numpy: accuracy, F1, Matthews correlation, Pearson and Spearman
correlation (GLUE's definitions, as scikit-learn and scipy compute them, without depending on either).
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "f1_binary", "matthews_corrcoef", "pearson", "spearman"]


def _arrays(pred, gold) -> tuple[np.ndarray, np.ndarray]:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape:
        raise ValueError(f"predictions {pred.shape} and labels {gold.shape} differ in shape")
    return pred, gold


def accuracy(pred, gold) -> float:
    """Fraction of equal entries (nan for no examples)."""
    pred, gold = _arrays(pred, gold)
    return float((pred == gold).mean()) if pred.size else float("nan")


def f1_binary(pred, gold, positive: int = 1) -> float:
    """F1 of the ``positive`` class (GLUE's MRPC/QQP F1); 0 when it is never predicted nor present."""
    pred, gold = _arrays(pred, gold)
    tp = float(((pred == positive) & (gold == positive)).sum())
    fp = float(((pred == positive) & (gold != positive)).sum())
    fn = float(((pred != positive) & (gold == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews_corrcoef(pred, gold) -> float:
    """Matthews correlation of two label vectors (CoLA's metric; the multi-class form, 0 when undefined)."""
    pred, gold = _arrays(pred, gold)
    labels = np.union1d(pred, gold)
    c = np.zeros((len(labels), len(labels)), dtype=np.float64)
    np.add.at(c, (np.searchsorted(labels, gold), np.searchsorted(labels, pred)), 1.0)
    t, p, n, correct = c.sum(1), c.sum(0), c.sum(), np.trace(c)
    denom = np.sqrt((n * n - (p * p).sum()) * (n * n - (t * t).sum()))
    return float((correct * n - (t * p).sum()) / denom) if denom else 0.0


def pearson(x, y) -> float:
    """Pearson correlation (nan when either side is constant)."""
    x, y = (np.asarray(v, dtype=np.float64) for v in _arrays(x, y))
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy's ``rankdata``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of the tie-averaged ranks)."""
    x, y = _arrays(x, y)
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))
