"""The declared feature schema: one small dataclass per kind of feature.

    schema = [
        Categorical("user_id", min_freq=2),             # vocabulary, rare values -> OOV bucket
        Categorical("C1", hash_buckets=1_000_000),      # or hashing (no vocabulary to fit)
        MultiHot("genres", max_len=6),                  # a bag of values, mean-pooled by models
        Numeric("I1", transforms=("log", "standardize")),
        Bucketized("age", n_buckets=8),                 # numeric -> quantile bucket (categorical)
        IdSequence("history", vocab_of="item_id", max_len=20),  # ids in time order, shared vocab
        Precomputed("text_vec", dim=64),                # a dense vector computed elsewhere
        Cross("gender_x_occupation", ("gender", "occupation")),  # for wide (linear) parts
    ]

Every categorical-like field reserves code 0 for "missing / padding"; vocabulary fields also
reserve code 1 for "out of vocabulary" (values rarer than `min_freq`, or unseen in training),
so a field of vocabulary size V has V + 2 codes; a hashed field has `hash_buckets + 1`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

MISSING, OOV = 0, 1

NUMERIC_TRANSFORMS = ("log", "standardize")


@dataclass
class Categorical:
    """One value per row -> one code. `hash_buckets > 0` hashes instead of fitting a vocabulary;
    `max_size` keeps only the most frequent values."""

    name: str
    column: str | None = None  # input column; default: `name`
    min_freq: int = 1
    max_size: int | None = None
    hash_buckets: int = 0
    kind: ClassVar[str] = "categorical"


@dataclass
class MultiHot:
    """A list of values per row (a list column, or text split on `separator`) -> a padded bag of
    codes (the first `max_len` values, 0 = padding)."""

    name: str
    column: str | None = None
    min_freq: int = 1
    max_size: int | None = None
    hash_buckets: int = 0
    max_len: int = 8
    separator: str | None = None
    kind: ClassVar[str] = "multihot"


@dataclass
class IdSequence:
    """Ids in time order (a list column) -> the last `max_len`, right-aligned, 0 = padding.

    `vocab_of` names a Categorical field whose vocabulary (and, in the models, embedding rows)
    the sequence shares, e.g. a user's history of items with the target `item_id`."""

    name: str
    column: str | None = None
    vocab_of: str | None = None
    max_len: int = 20
    min_freq: int = 1
    max_size: int | None = None
    hash_buckets: int = 0
    kind: ClassVar[str] = "sequence"


@dataclass
class Numeric:
    """A number per row -> a float, through `transforms` in order: "log" (log1p of max(x, 0):
    counts with heavy tails) and "standardize" (training mean / std). Missing -> 0 (the mean)."""

    name: str
    column: str | None = None
    transforms: tuple[str, ...] = ("standardize",)
    kind: ClassVar[str] = "numeric"


@dataclass
class Bucketized:
    """A number per row -> the code of its training-quantile bucket (a categorical feature);
    `log` applies log1p(max(x, 0)) first (only matters for ties at the boundaries)."""

    name: str
    column: str | None = None
    n_buckets: int = 10
    log: bool = False
    kind: ClassVar[str] = "bucketized"


@dataclass
class Precomputed:
    """A fixed-size float vector per row (a list/array column), e.g. a text embedding; missing ->
    zeros."""

    name: str
    dim: int
    column: str | None = None
    kind: ClassVar[str] = "precomputed"


@dataclass
class Cross:
    """The cross product of categorical/bucketized fields (by name), for wide (linear) parts.

    `hash_buckets = 0` keeps every combination (codes in mixed radix); otherwise hashed."""

    name: str
    fields: tuple[str, ...] = field(default_factory=tuple)
    hash_buckets: int = 0
    kind: ClassVar[str] = "cross"


FeatureSpec = Categorical | MultiHot | IdSequence | Numeric | Bucketized | Precomputed | Cross
SPEC_TYPES: dict[str, type] = {c.kind: c for c in (Categorical, MultiHot, IdSequence, Numeric,
                                                   Bucketized, Precomputed, Cross)}


def spec_to_json(spec: FeatureSpec) -> dict[str, Any]:
    """A spec as a JSON-able dict with its kind."""
    d = asdict(spec)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return {"kind": spec.kind, **d}


def spec_from_json(d: dict[str, Any]) -> FeatureSpec:
    """Inverse of `spec_to_json`."""
    d = dict(d)
    kind = d.pop("kind")
    if kind not in SPEC_TYPES:
        raise ValueError(f"unknown feature kind '{kind}'; known: {sorted(SPEC_TYPES)}")
    for k in ("transforms", "fields"):
        if k in d:
            d[k] = tuple(d[k])
    return SPEC_TYPES[kind](**d)


def column_of(spec: FeatureSpec) -> str:
    """The input column a spec reads (its name unless `column` is set)."""
    return getattr(spec, "column", None) or spec.name
