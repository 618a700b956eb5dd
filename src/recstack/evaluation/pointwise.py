"""Pointwise metrics for CTR / rating prediction: AUC, group AUC, log loss, RMSE, MAE.

All functions accept numpy arrays, torch tensors (any device) or sequences, and return
Python floats computed in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = ["auc", "group_auc", "logloss", "mae", "rmse"]


def _as_np(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def _check_same_len(*arrays: tuple[str, np.ndarray]) -> None:
    n = {a.shape[0] for _, a in arrays}
    if len(n) != 1:
        desc = ", ".join(f"{name}={a.shape[0]}" for name, a in arrays)
        raise ValueError(f"length mismatch: {desc}")


def _binary_labels(labels: Any) -> np.ndarray:
    y = _as_np(labels, "labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (0/1)")
    return y


def auc(labels: Any, scores: Any) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counting 1/2.

    Computed from average ranks (Mann-Whitney U), O(n log n).

    Args:
        labels: ``[n]`` binary labels (0/1 or bool).
        scores: ``[n]`` real scores.

    Returns:
        The AUC, or ``nan`` when only one class is present.
    """
    y = _binary_labels(labels)
    s = _as_np(scores, "scores")
    _check_same_len(("labels", y), ("scores", s))
    n_pos = float(y.sum())
    n_neg = float(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    ranks = rankdata(s, method="average")  # tied scores share their mean rank -> 1/2 credit
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def group_auc(labels: Any, scores: Any, groups: Any) -> float:
    """Impression-weighted mean AUC over groups (typically users) with both classes.

    ``GAUC = sum_g n_g * AUC_g / sum_g n_g`` where ``n_g`` is the number of impressions
    of group ``g`` and only groups containing at least one positive and one negative
    take part. Fully vectorised: one lexicographic sort gives within-group average ranks.

    Args:
        labels: ``[n]`` binary labels.
        scores: ``[n]`` real scores.
        groups: ``[n]`` group ids (any sortable values).

    Returns:
        The group AUC, or ``nan`` if no group has both classes.
    """
    y = _binary_labels(labels)
    s = _as_np(scores, "scores")
    g_raw = _as_np(groups, "groups", dtype=None)
    _check_same_len(("labels", y), ("scores", s), ("groups", g_raw))
    if y.size == 0:
        return float("nan")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    _, g = np.unique(g_raw, return_inverse=True)
    g = g.reshape(-1)
    n_groups = int(g.max()) + 1

    order = np.lexsort((s, g))  # by group, then score ascending
    gs, ss, ys = g[order], s[order], y[order]
    n = gs.shape[0]
    pos = np.arange(n, dtype=np.float64)
    # Start of every run of equal (group, score): tied entries share the mean position.
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = pos[new_run]
    run_end = np.append(run_start[1:], n) - 1
    mean_pos = ((run_start + run_end) / 2.0)[run_id]
    group_start = np.zeros(n_groups, dtype=np.float64)
    sizes = np.bincount(gs, minlength=n_groups).astype(np.float64)
    group_start[1:] = np.cumsum(sizes)[:-1]
    rank_in_group = mean_pos - group_start[gs] + 1.0  # 1-based average rank

    n_pos = np.bincount(gs, weights=ys, minlength=n_groups)
    n_neg = sizes - n_pos
    rank_sum = np.bincount(gs, weights=rank_in_group * ys, minlength=n_groups)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    u = rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0
    aucs = u / (n_pos[valid] * n_neg[valid])
    w = sizes[valid]
    return float((aucs * w).sum() / w.sum())


def logloss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to ``[eps, 1 - eps]``."""
    y = _as_np(labels, "labels")
    p = _as_np(probs, "probs")
    _check_same_len(("labels", y), ("probs", p))
    if y.size == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def rmse(targets: Any, predictions: Any) -> float:
    """Root mean squared error."""
    t = _as_np(targets, "targets")
    p = _as_np(predictions, "predictions")
    _check_same_len(("targets", t), ("predictions", p))
    if t.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(targets: Any, predictions: Any) -> float:
    """Mean absolute error."""
    t = _as_np(targets, "targets")
    p = _as_np(predictions, "predictions")
    _check_same_len(("targets", t), ("predictions", p))
    if t.size == 0:
        return float("nan")
    return float(np.mean(np.abs(p - t)))
