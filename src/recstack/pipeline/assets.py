"""The named things a pipeline config refers to: models, indexes, item-item matrices, plus the
item catalog and the user store. A bundle loads into one `Assets`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import scipy.sparse as sp

from recstack.index.base import VectorIndex
from recstack.models.base import Recommender
from recstack.pipeline.catalog import ItemCatalog, UserStore
from recstack.pipeline.embedding import QueryEncoder


def _get(kind: str, table: dict, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} '{name}'; available: {sorted(table) or 'none'}")
    return table[name]


@dataclass
class Assets:
    """Everything a pipeline is built from."""

    catalog: ItemCatalog
    users: UserStore
    models: dict[str, Recommender] = field(default_factory=dict)
    indexes: dict[str, VectorIndex] = field(default_factory=dict)
    matrices: dict[str, sp.csr_matrix] = field(default_factory=dict)
    history_len: int = 50
    extras: dict[str, Path] = field(default_factory=dict)  # directories of other artefacts

    def __post_init__(self) -> None:
        self._encoders: dict[str, QueryEncoder] = {}
        n = self.catalog.n_items
        for name, m in self.models.items():
            if m.n_items_ != n:
                raise ValueError(f"model '{name}' has {m.n_items_} items, the catalog {n}")
        for name, mat in self.matrices.items():
            if mat.shape != (n, n):
                raise ValueError(f"matrix '{name}' has shape {mat.shape}, expected ({n}, {n})")

    def model(self, name: str) -> Recommender:
        return _get("model", self.models, name)

    def index(self, name: str) -> VectorIndex:
        return _get("index", self.indexes, name)

    def matrix(self, name: str) -> sp.csr_matrix:
        return _get("matrix", self.matrices, name)

    def extra(self, name: str) -> Path:
        return _get("extra artefact", self.extras, name)

    def encoder(self, name: str) -> QueryEncoder:
        """The (shared) query encoder of embedding model `name`."""
        if name not in self._encoders:
            self._encoders[name] = QueryEncoder(self.model(name), name, self.history_len)
        return self._encoders[name]
