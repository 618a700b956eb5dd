"""Features, in one package: declared schemas, fitted vocabularies and statistics, encoders.

* :class:`FeaturePipeline` (CTR models): a declared schema -> fitted vocabularies / statistics
  -> model tensors, identical at training and serving time; :class:`FeatureStore`: the raw
  user / item attributes of both paths.
* :func:`build_features` / :class:`FeatureEncoder` (two-tower, YouTube-DNN, cold start): the
  side features of users or items -> one vector per entity; :class:`History` / :class:`MeanBag`:
  users' item histories for the query towers.
* :class:`Vocabulary` and :class:`NumericStats`: the one implementation of categorical codes and
  numeric standardisation behind both.
"""

from recstack.data.hashing import fnv1a64, hash_bucket, mix64
from recstack.features.entity import (
    FeatureEncoder,
    FeatureRows,
    Schema,
    build_features,
    embedding_dim,
    table_from_values,
)
from recstack.features.history import History, MeanBag
from recstack.features.pipeline import BagLayout, FeaturePipeline, Layout
from recstack.features.specs import (
    MISSING,
    OOV,
    Bucketized,
    Categorical,
    Cross,
    FeatureSpec,
    IdSequence,
    MultiHot,
    Numeric,
    Precomputed,
)
from recstack.features.stats import Moments, NumericStats, standardize
from recstack.features.store import FeatureStore, list_series, table_frame
from recstack.features.vocab import RESERVED_FIRST, UNKNOWN_LAST, ValueCounts, Vocabulary

__all__ = [
    "FeaturePipeline", "Layout", "BagLayout", "FeatureStore", "FeatureSpec",
    "Categorical", "MultiHot", "IdSequence", "Numeric", "Bucketized", "Precomputed", "Cross",
    "MISSING", "OOV", "fnv1a64", "hash_bucket", "mix64", "list_series", "table_frame",
    "build_features", "FeatureEncoder", "FeatureRows", "Schema", "embedding_dim", "table_from_values",
    "History", "MeanBag",
    "Vocabulary", "ValueCounts", "RESERVED_FIRST", "UNKNOWN_LAST",
    "NumericStats", "Moments", "standardize",
]
