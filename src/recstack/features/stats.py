"""Statistics of numeric features: the mean / std a value is standardised with, fitted on the
training rows (NaN / inf = missing, left out), used by the feature pipeline (CTR models) and by
the entity encoders (two-tower, YouTube-DNN).

    st = NumericStats.of(x)                  # a whole column in memory
    m = Moments(); m.add(chunk); ...; st = m.stats()     # streamed over chunks
    z = standardize(x, st.mean, st.std)      # numpy arrays or torch tensors

A field without any finite value has mean 0 and std 1; a constant field (std 0, or a single
value) has std 1, so standardising never divides by zero.

There are two estimators of the same statistics, and each is kept because the numbers of the
models that use it depend on it bit for bit:

* :meth:`NumericStats.of` (entity tables, which are in memory): two passes (mean, then the mean
  squared deviation) in the column's own dtype (float32 for the entity encoders).
* :class:`Moments` (the feature pipeline, fitted on streamed chunks of any size): one pass of
  float64 count / sum / sum of squares; ``E[x^2] - mean^2`` cancels to a tiny non-zero variance
  on a constant column, hence its tolerance ``1e-12`` instead of 0.

A missing value standardises to 0 (the mean) in both. The entity encoders also add a missing
indicator per field (their tower input is built from the schema); the pipeline's ``num`` has one
column per field, the layout every CTR model is built on, so it has none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def finite(x: np.ndarray) -> np.ndarray:
    """The observed (finite) values of a column: NaN and inf are missing."""
    x = np.asarray(x)
    return x[np.isfinite(x)]


def usable_std(std: float, tol: float = 0.0) -> float:
    """``std``, or 1 where it is not above ``tol`` (a constant field: nothing to scale)."""
    return std if std > tol else 1.0


def standardize(x: T, mean: Any, std: Any) -> T:
    """``(x - mean) / std`` (numpy arrays or torch tensors; missing values stay NaN)."""
    return (x - mean) / std


@dataclass(frozen=True)
class NumericStats:
    """Mean and std of a numeric field (JSON: ``{"mean": .., "std": ..}``)."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, x: np.ndarray) -> NumericStats:
        """Statistics of a whole column (two passes, in the column's dtype)."""
        ok = finite(x)
        mean = float(ok.mean()) if len(ok) else 0.0
        std = float(ok.std()) if len(ok) > 1 else 1.0
        return cls(mean, usable_std(std))

    def standardize(self, x: T) -> T:
        return standardize(x, self.mean, self.std)

    def to_json(self) -> dict[str, float]:
        return asdict(self)


class Moments:
    """Streamed statistics of a numeric field: :meth:`add` chunks, then :meth:`stats`."""

    def __init__(self) -> None:
        self.sums = np.zeros(3)  # count, sum, sum of squares (float64)

    def add(self, x: np.ndarray) -> None:
        x = finite(x)
        self.sums += (len(x), x.sum(), np.square(x).sum())

    def stats(self) -> NumericStats:
        cnt, tot, sq = self.sums
        mean = tot / cnt if cnt else 0.0
        var = sq / cnt - mean * mean if cnt else 1.0
        std = float(np.sqrt(max(var, 0.0)))
        return NumericStats(float(mean), usable_std(std, tol=1e-12))
