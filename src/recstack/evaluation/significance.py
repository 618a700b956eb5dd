"""Paired significance tests and bootstrap confidence intervals for per-user metrics."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats

from recstack.evaluation.ranking import RankingResult

__all__ = ["bootstrap_ci", "compare", "paired_test"]

# Elements per vectorised resampling block (bounds memory for large n).
_BLOCK_ELEMENTS = 1 << 22


def _arr(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def _sign_flip_p(d: np.ndarray, n_permutations: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(d)`` (paired test under H0: symmetric)."""
    nz = d[d != 0]  # zero differences are unaffected by a sign flip
    obs = abs(nz.sum())
    # Sums equal to the observed one up to float rounding must count as "as extreme".
    tol = 1e-9 * max(1.0, float(np.abs(nz).sum()))
    if 2 ** nz.shape[0] <= n_permutations:
        # Few non-zero differences: enumerate every sign pattern for an exact p-value.
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=nz.shape[0])))
        sums = np.abs(signs @ nz) if nz.size else np.zeros(1)
        return float((sums >= obs - tol).mean())
    total = nz.sum()
    block = max(1, _BLOCK_ELEMENTS // max(1, nz.shape[0]))
    extreme = 0
    done = 0
    while done < n_permutations:
        b = min(block, n_permutations - done)
        flip = rng.random((b, nz.shape[0])) < 0.5
        # sum(s * d) with s = -1 on flipped entries = total - 2 * sum(flipped d)
        sums = np.abs(total - 2.0 * (flip @ nz))
        extreme += int((sums >= obs - tol).sum())
        done += b
    # +1 counts the observed labelling, so the p-value is never exactly 0.
    return (extreme + 1.0) / (n_permutations + 1.0)


def paired_test(
    a: Any,
    b: Any,
    method: str = "t",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Two-sided paired test of ``mean(a - b) = 0`` over aligned per-user values.

    Args:
        a: Per-user metric values of the first system.
        b: Per-user metric values of the second system, aligned with `a` (same users, same
            order).
        method: ``"t"`` (paired t-test), ``"wilcoxon"`` (signed-rank, zero differences
            dropped) or ``"permutation"`` (sign-flip test on the mean difference; exact
            when ``2**n_nonzero <= n_permutations``).
        n_permutations: Random sign flips for ``"permutation"``.
        seed: Seed for ``"permutation"``.

    Returns:
        ``{"statistic", "p_value", "mean_diff", "method", "n"}``. Identical inputs give
        ``statistic=0, p_value=1``; a constant non-zero difference gives ``p_value=0`` for
        the t-test (infinite t).
    """
    x = _arr(a, "a")
    y = _arr(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be aligned, got lengths {x.shape[0]} and {y.shape[0]}")
    if method not in ("t", "wilcoxon", "permutation"):
        raise ValueError(f"method must be 't', 'wilcoxon' or 'permutation', got {method!r}")
    d = x - y
    n = int(d.shape[0])
    out: dict[str, Any] = {"method": method, "n": n}
    out["mean_diff"] = float(d.mean()) if n else float("nan")
    if n == 0:
        return {**out, "statistic": float("nan"), "p_value": float("nan")}
    if not d.any():
        # No difference at all: every test's statistic is 0 and nothing is significant.
        return {**out, "statistic": 0.0, "p_value": 1.0}

    if method == "t":
        if n < 2:
            return {**out, "statistic": float("nan"), "p_value": float("nan")}
        sd = d.std(ddof=1)
        if sd == 0:  # constant non-zero difference: t is infinite
            return {**out, "statistic": float(np.sign(d[0]) * np.inf), "p_value": 0.0}
        res = stats.ttest_rel(x, y)
        return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}
    if method == "wilcoxon":
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}
    rng = np.random.default_rng(seed)
    p = _sign_flip_p(d, int(n_permutations), rng)
    return {**out, "statistic": float(d.mean()), "p_value": float(p)}


def bootstrap_ci(
    values: Any, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Resamples ``values`` with replacement ``n_boot`` times (vectorised in blocks) and
    returns the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means.
    Deterministic for a given ``seed``. ``(nan, nan)`` for empty input.
    """
    v = _arr(values, "values")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    n = v.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for s in range(0, n_boot, block):
        e = min(s + block, n_boot)
        idx = rng.integers(0, n, size=(e - s, n))
        means[s:e] = v[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def compare(
    result_a: RankingResult,
    result_b: RankingResult,
    metric: str,
    method: str = "t",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of two evaluation results on one metric.

    Users are aligned by id; only users present in both results are used (with a
    warning if the user sets differ).

    Returns:
        ``{"metric", "n_users", "mean_a", "mean_b", "diff", "ci", "p_value",
        "statistic", "method"}`` where ``diff = mean_a - mean_b`` and ``ci`` is the paired
        percentile-bootstrap interval of the mean per-user difference (users resampled
        jointly for both systems).
    """
    for name, res in (("result_a", result_a), ("result_b", result_b)):
        if metric not in res.per_user:
            raise KeyError(f"{metric!r} not in {name}; available: {sorted(res.per_user)}")
    common, ia, ib = np.intersect1d(result_a.users, result_b.users, return_indices=True)
    if common.shape[0] != result_a.users.shape[0] or common.shape[0] != result_b.users.shape[0]:
        warnings.warn(
            f"results cover different users; comparing on the {common.shape[0]} common ones",
            UserWarning,
            stacklevel=2,
        )
    a = np.asarray(result_a.per_user[metric], dtype=np.float64)[ia]
    b = np.asarray(result_b.per_user[metric], dtype=np.float64)[ib]
    test = paired_test(a, b, method=method, seed=seed)
    ci = bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)
    n = int(common.shape[0])
    return {
        "metric": metric,
        "n_users": n,
        "mean_a": float(a.mean()) if n else float("nan"),
        "mean_b": float(b.mean()) if n else float("nan"),
        "diff": float((a - b).mean()) if n else float("nan"),
        "ci": ci,
        "p_value": test["p_value"],
        "statistic": test["statistic"],
        "method": method,
    }
