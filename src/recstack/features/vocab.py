"""Vocabularies of categorical values: raw value -> code, with reserved codes for missing and
unseen values. The one implementation behind the feature pipeline (CTR models) and the entity
encoders (two-tower, YouTube-DNN, cold start).

    voc = Vocabulary(["red", "green"])                        # FeaturePipeline layout
    voc.encode(pl.Series(["green", "blue", None]))            # [3, 1, 0]: value, unseen, missing
    voc = Vocabulary(["red", "green"], layout=UNKNOWN_LAST)   # entity-encoder layout
    voc.recode(np.array([1, -1, 0]), np.array(["blue", "green", "red"]))   # [2, 1, 0]

Values are matched by their text (``str`` of each value, or polars' cast to ``String`` for a
polars column), so a vocabulary saved as JSON matches the raw values it was fitted on.

Two code layouts, one lookup. They differ for a reason, and both are kept exactly:

* ``RESERVED_FIRST`` (:class:`~recstack.features.FeaturePipeline`): 0 = missing (shared with the
  padding of bags: a zero row), 1 = out of vocabulary (a learned row for values cut by
  ``min_freq`` / ``max_size`` or unseen), 2.. = the values; ``V + 2`` codes.
* ``UNKNOWN_LAST`` (:class:`~recstack.features.FeatureEncoder`): the values keep the codes of
  the data set's :class:`~recstack.data.dataset.FeatureTable` (0..V-1, no remapping of the
  stored codes) and one row ``V``, zero-initialised, stands for missing and unseen values alike;
  ``V + 1`` codes. Saved two-tower / YouTube-DNN models have this row layout (and moving the
  row would change the random initialisation of every other row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import polars as pl

from recstack.features.specs import MISSING, OOV

RESERVED_FIRST: Literal["reserved_first"] = "reserved_first"
UNKNOWN_LAST: Literal["unknown_last"] = "unknown_last"
Layout = Literal["reserved_first", "unknown_last"]


def as_text(values: pl.Series | np.ndarray | Sequence[Any]) -> pl.Series:
    """Values as a polars String column: a polars column is cast (nulls stay null), anything
    else is converted value by value with ``str``."""
    if isinstance(values, pl.Series):
        return values.cast(pl.String)
    return pl.Series([str(v) for v in np.asarray(values).tolist()], dtype=pl.String)


class Vocabulary:
    """The known values of a categorical field, in code order.

    Args:
        values: the known values (any JSON-able values; matched by their text).
        layout: where the reserved codes go (see the module docstring).
    """

    def __init__(self, values: Sequence[Any], layout: Layout = RESERVED_FIRST) -> None:
        if layout not in (RESERVED_FIRST, UNKNOWN_LAST):
            raise ValueError(f"unknown vocabulary layout '{layout}'")
        self.values, self.layout = list(values), layout
        self._keys: tuple[pl.Series, pl.Series] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} values, layout={self.layout!r})"

    @property
    def size(self) -> int:
        """Number of codes (the rows of an embedding table over this vocabulary)."""
        return len(self) + (2 if self.layout == RESERVED_FIRST else 1)

    @property
    def missing(self) -> int:
        """Code of a missing value."""
        return MISSING if self.layout == RESERVED_FIRST else len(self)

    @property
    def unknown(self) -> int:
        """Code of a value not in the vocabulary."""
        return OOV if self.layout == RESERVED_FIRST else len(self)

    # ---- lookups -----------------------------------------------------------------------------
    def index(self, values: pl.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
        """Position of each value in the vocabulary, int64; -1 = not in it (nulls included)."""
        text = as_text(values)
        if not len(self) or not len(text):
            return np.full(len(text), -1, np.int64)
        if self._keys is None:
            keys = pl.Series([str(v) for v in self.values], dtype=pl.String)
            pos = pl.Series(np.arange(len(keys), dtype=np.int64))
            if keys.n_unique() < len(keys):  # values with the same text: the first one wins
                first = keys.is_first_distinct()
                keys, pos = keys.filter(first), pos.filter(first)
            self._keys = keys, pos
        keys, pos = self._keys
        return text.replace_strict(keys, pos, default=-1, return_dtype=pl.Int64).to_numpy().copy()

    def codes(self, positions: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
        """Positions (-1 = not in the vocabulary) -> codes; ``missing`` marks missing values."""
        positions = np.asarray(positions, np.int64)
        if self.layout == UNKNOWN_LAST:
            unknown = positions < 0 if missing is None else (positions < 0) | missing
            return np.where(unknown, len(self), positions).astype(np.int64)
        out = np.where(positions < 0, OOV, positions + 2).astype(np.int64)
        if missing is not None:
            out[missing] = MISSING
        return out

    def encode(self, values: pl.Series) -> np.ndarray:
        """Codes of raw values (nulls = missing)."""
        text = as_text(values)
        return self.codes(self.index(text), text.is_null().to_numpy())

    def recode(self, codes: np.ndarray, vocab: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Codes of another vocabulary (indices into the raw values ``vocab``, -1 = missing)
        -> this vocabulary's codes."""
        codes = np.asarray(codes, np.int64)
        index = self.index(vocab)
        pos = index[np.maximum(codes, 0)] if len(index) else np.full(len(codes), -1, np.int64)
        return self.codes(pos, codes < 0)


class ValueCounts:
    """Occurrences of each value of a field, accumulated over chunks of rows (memory bounded by
    the number of distinct values); :meth:`vocabulary` keeps the frequent ones."""

    def __init__(self) -> None:
        self._counts: pl.DataFrame | None = None

    def add(self, values: pl.Series) -> None:
        """Count the non-null values of a chunk (as text)."""
        vc = (values.cast(pl.String).drop_nulls().value_counts(name="count")
              .rename({values.name: "value"}).with_columns(pl.col("count").cast(pl.Int64)))
        prev = self._counts
        self._counts = vc if prev is None else (
            pl.concat([prev, vc]).group_by("value").agg(pl.col("count").sum()))

    def vocabulary(self, min_freq: int = 1, max_size: int | None = None,
                   layout: Layout = RESERVED_FIRST) -> Vocabulary:
        """Values seen at least ``min_freq`` times, most frequent first (ties by value), at most
        ``max_size`` of them."""
        if self._counts is None:
            return Vocabulary([], layout)
        vc = self._counts.filter(pl.col("count") >= min_freq).sort(
            ["count", "value"], descending=[True, False])
        if max_size is not None:
            vc = vc.head(max_size)
        return Vocabulary(vc["value"].to_list(), layout)
