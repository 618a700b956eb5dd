"""Data layer: the dataset type, readers addressed by spec strings, transforms and splits."""

from recstack.data.dataset import TEST, TRAIN, VALID, FeatureTable, Interactions, Vocab, from_raw
from recstack.data.errors import DataError
from recstack.data.interop import as_interactions

__all__ = ["Interactions", "Vocab", "FeatureTable", "from_raw", "DataError", "as_interactions", "TRAIN", "VALID", "TEST"]
