"""Analysis of an A/B log: per-variant reward with confidence intervals, a significance test
against the control, a sample-ratio-mismatch check, and off-policy (IPS) estimates.

A log is JSON lines, one per impression or request, each with at least `variant` and a reward
field (`reward`, or `click`): {"variant": "B", "user": "42", "reward": 1}.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from recstack.data.errors import DataError


@dataclass
class VariantStats:
    variant: str
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def iter_jsonl(path: str | Path):
    """``(line number, parsed object)`` for every non-blank line of a JSONL file; a line that is
    not JSON raises DataError naming the file and the line."""
    p = Path(path)
    with p.open() as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield ln, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not JSON: {e.msg}", path=str(p), line=ln) from e


def read_log(path: str | Path, reward: str = "reward") -> dict[str, np.ndarray]:
    """Rewards per variant from a JSON-lines log.

    Raises:
        DataError: a line that is not JSON, or lacks `variant` or the reward field (named with
            the file and line number).
    """
    p = Path(path)
    out: dict[str, list[float]] = {}
    for ln, row in iter_jsonl(p):
        if "variant" not in row:
            raise DataError("missing field", path=str(p), line=ln, field="variant")
        if reward not in row:
            raise DataError("missing field", path=str(p), line=ln, field=reward)
        try:
            out.setdefault(str(row["variant"]), []).append(float(row[reward]))
        except (TypeError, ValueError) as e:
            raise DataError(f"reward is not a number: {row[reward]!r}", path=str(p), line=ln, field=reward) from e
    if not out:
        raise DataError("the log has no rows", path=str(p))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def variant_stats(name: str, r: np.ndarray, level: float = 0.95) -> VariantStats:
    """Mean reward with a confidence interval: Wilson's for 0/1 rewards (sound for small
    counts and rates near 0), the normal interval of the mean otherwise."""
    n = len(r)
    mean = float(r.mean()) if n else float("nan")
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    z = stats.norm.ppf(0.5 + level / 2)
    if n and np.isin(r, (0.0, 1.0)).all():
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lo, hi = centre - half, centre + half
    else:
        half = z * std / math.sqrt(max(n, 1))
        lo, hi = mean - half, mean + half
    return VariantStats(name, n, mean, std, lo, hi)


def compare(control: np.ndarray, treatment: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Welch's t-test of mean(treatment) - mean(control); for 0/1 rewards this is the
    two-proportion z-test with unpooled variance. Returns the difference, its CI, the relative
    lift and the two-sided p-value."""
    n1, n2 = len(control), len(treatment)
    if n1 < 2 or n2 < 2:
        raise ValueError("compare: each variant needs at least 2 observations")
    m1, m2 = control.mean(), treatment.mean()
    v1, v2 = control.var(ddof=1) / n1, treatment.var(ddof=1) / n2
    se = math.sqrt(v1 + v2)
    diff = float(m2 - m1)
    if se == 0:
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "lift": diff / m1 if m1 else float("nan"),
                "p_value": 1.0 if diff == 0 else 0.0}
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if v1 + v2 > 0 else n1 + n2 - 2
    t = diff / se
    q = stats.t.ppf(0.5 + level / 2, df)
    return {"diff": diff, "ci_low": diff - q * se, "ci_high": diff + q * se,
            "lift": diff / m1 if m1 else float("nan"), "p_value": float(2 * stats.t.sf(abs(t), df))}


def sample_ratio_mismatch(counts: Sequence[int], weights: Sequence[float]) -> float:
    """p-value of a chi-square goodness-of-fit test of the observed counts against the
    configured split; a tiny value (< 0.001) means the assignment or the logging is broken."""
    counts = np.asarray(counts, np.float64)
    w = np.asarray(weights, np.float64)
    expected = counts.sum() * w / w.sum()
    return float(stats.chisquare(counts, expected).pvalue)


def analyze(rewards: dict[str, np.ndarray], control: str | None = None,
            weights: dict[str, float] | None = None, alpha: float = 0.05) -> dict:
    """The whole analysis as a JSON-able dict: per-variant stats, each variant against the
    control (the first variant by name unless given), and the sample-ratio check."""
    names = sorted(rewards)
    control = control or names[0]
    if control not in rewards:
        raise ValueError(f"analyze: control variant {control!r} not in the log ({names})")
    w = weights or {v: 1.0 for v in names}
    missing = [v for v in names if v not in w]
    if missing:
        raise ValueError(f"analyze: no configured weight for variant(s) {missing}")
    srm_p = sample_ratio_mismatch([len(rewards[v]) for v in names], [w[v] for v in names])
    out = {
        "control": control,
        "variants": [asdict(variant_stats(v, rewards[v])) for v in names],
        "comparisons": {},
        "srm_p_value": srm_p,
        "srm_warning": srm_p < 1e-3,
    }
    for v in names:
        if v != control:
            c = compare(rewards[control], rewards[v], level=1 - alpha)
            c["significant"] = c["p_value"] < alpha
            out["comparisons"][v] = c
    return out


def ips_estimate(rewards: np.ndarray, logged_propensity: np.ndarray, target_propensity: np.ndarray,
                 clip: float = 10.0) -> dict[str, float]:
    """Off-policy value of a new policy from logged data (inverse propensity scoring).

    rewards[i] was observed after the logging policy chose action a_i with probability
    logged_propensity[i]; target_propensity[i] is the new policy's probability of a_i. Weights
    w = target / logged are clipped at `clip` (bias for variance). Returns the clipped IPS and
    the self-normalised (SNIPS) estimates with the IPS standard error.

    Raises:
        ValueError: lengths differ or a logged propensity is not in (0, 1].
    """
    r, p0, p1 = (np.asarray(x, np.float64) for x in (rewards, logged_propensity, target_propensity))
    if not (len(r) == len(p0) == len(p1)) or len(r) == 0:
        raise ValueError("ips_estimate: rewards and propensities must be non-empty and of one length")
    if (p0 <= 0).any() or (p0 > 1).any():
        raise ValueError("ips_estimate: logged propensities must lie in (0, 1]")
    w = np.minimum(p1 / p0, clip)
    terms = w * r
    return {"ips": float(terms.mean()), "ips_se": float(terms.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else 0.0,
            "snips": float(terms.sum() / w.sum()) if w.sum() > 0 else float("nan"),
            "clipped_share": float((p1 / p0 > clip).mean()), "n": len(r)}
