"""The feature pipeline: declared schema -> fitted vocabularies/statistics -> model tensors,
identical at training and serving time; and the store of raw user/item attributes."""

from recstack.data.hashing import fnv1a64, hash_bucket, mix64
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
from recstack.features.store import FeatureStore, list_series, table_frame

__all__ = [
    "FeaturePipeline", "Layout", "BagLayout", "FeatureStore", "FeatureSpec",
    "Categorical", "MultiHot", "IdSequence", "Numeric", "Bucketized", "Precomputed", "Cross",
    "MISSING", "OOV", "fnv1a64", "hash_bucket", "mix64", "list_series", "table_frame",
]
