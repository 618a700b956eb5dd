"""What the pipeline knows about items and users besides the models: ids, popularity,
freshness, categories, and each known user's time-ordered history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recstack.data.dataset import Interactions
from recstack.data.transforms import user_sequences
from recstack.pipeline.ids import IdMap, storable_ids

_MAX_BITS = 64  # categories beyond the 64th are not filterable (caps use the primary category)


def _load(path: Path, name: str) -> np.ndarray:
    return np.load(path / f"{name}.npy", allow_pickle=False)  # never unpickle


@dataclass
class ItemCatalog:
    """Per-item arrays aligned to item index.

    Attributes:
        ids: raw item ids.
        popularity: training interaction counts.
        freshness: 0..1, 1 = newest (percentile rank of the item's first interaction time).
        category_names: names of the categories.
        category_bits: bit c set when the item belongs to category c (first 64 categories).
        primary_category: the item's first category (-1 = none); used by per-category caps.
        titles: display titles (str per item; None when the training data has none), stored as
            `titles.json` and shown by the service next to each returned item.
    """

    ids: np.ndarray
    popularity: np.ndarray
    freshness: np.ndarray
    category_names: np.ndarray
    category_bits: np.ndarray
    primary_category: np.ndarray
    titles: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = storable_ids(self.ids)
        n = len(self.ids)
        if self.titles is not None and len(self.titles) != n:
            raise ValueError(f"catalog: titles has {len(self.titles)} rows, ids {n}")
        for name in ("popularity", "freshness", "category_bits", "primary_category"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"catalog: {name} has {len(getattr(self, name))} rows, ids {n}")
        self.id_map = IdMap(self.ids)
        self._category_index = {str(c): j for j, c in enumerate(self.category_names.tolist())}

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @classmethod
    def from_interactions(cls, data: Interactions, category_field: str | None = "genres") -> ItemCatalog:
        """Build from training data; `category_field` is a categorical or multi-hot item feature
        (None or absent: no categories)."""
        n = data.n_items
        pop = data.item_counts().astype(np.float32)
        t = data.timestamp if data.timestamp is not None else np.arange(len(data))
        first = np.full(n, np.inf)
        np.minimum.at(first, data.item, t.astype(np.float64))
        first[~np.isfinite(first)] = -np.inf  # never seen: oldest
        rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
        fresh = (rank / max(1, n - 1)).astype(np.float32)
        names, bits, primary = np.zeros(0, str), np.zeros(n, np.uint64), np.full(n, -1, np.int32)
        feats = data.item_features
        if category_field and feats is not None:
            if category_field in feats.multihot:
                off, val, voc = feats.multihot[category_field]
                owner = np.repeat(np.arange(n), np.diff(off))
            elif category_field in feats.categorical:
                codes, voc = feats.categorical[category_field]
                owner, val = np.flatnonzero(codes >= 0), codes[codes >= 0]
                off = None
            else:
                raise ValueError(f"catalog: item feature '{category_field}' is not categorical or "
                                 f"multi-hot; item features: {feats.names()}")
            names = np.asarray(voc).astype(str)
            low = val < _MAX_BITS
            np.bitwise_or.at(bits, owner[low], np.left_shift(np.uint64(1), val[low].astype(np.uint64)))
            if off is not None:
                has = np.diff(off) > 0
                primary[has] = val[off[:-1][has]]
            else:
                primary[owner] = val
        titles = feats.text.get("title") if feats is not None else None
        if titles is not None:
            titles = np.asarray([t if isinstance(t, str) else "" for t in titles.tolist()], dtype=object)
        return cls(data.item_vocab.raw, pop, fresh, names, bits, primary, titles)

    def category_mask(self, names: list[str]) -> tuple[np.uint64, list[str]]:
        """Bit mask of the named categories, and the names that are unknown (or past bit 64)."""
        mask, unknown = np.uint64(0), []
        for name in names:
            j = self._category_index.get(str(name))
            if j is None or j >= _MAX_BITS:
                unknown.append(str(name))
            else:
                mask |= np.uint64(1) << np.uint64(j)
        return mask, unknown

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in ("ids", "popularity", "freshness", "category_names", "category_bits", "primary_category"):
            np.save(path / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
        if self.titles is not None:
            (path / "titles.json").write_text(json.dumps([str(t) for t in self.titles.tolist()]))
        (path / "catalog.json").write_text(json.dumps({"n_items": self.n_items}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ItemCatalog:
        path = Path(path)
        titles = None
        if (path / "titles.json").is_file():  # bundles before titles were stored have none
            raw = json.loads((path / "titles.json").read_text())
            if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
                raise ValueError(f"{path / 'titles.json'}: expected a JSON list of strings")
            titles = np.asarray(raw, dtype=object)
        return cls(*(_load(path, n) for n in ("ids", "popularity", "freshness", "category_names",
                                              "category_bits", "primary_category")), titles)


@dataclass
class UserStore:
    """Known users: raw ids and time-ordered histories (CSR: user u's items are
    ``items[indptr[u]:indptr[u+1]]``, oldest first)."""

    ids: np.ndarray
    indptr: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        self.ids = storable_ids(self.ids)
        if len(self.indptr) != len(self.ids) + 1 or self.indptr[-1] != len(self.items):
            raise ValueError("user store: indptr does not match ids / items")
        self.id_map = IdMap(self.ids)

    @property
    def n_users(self) -> int:
        return len(self.ids)

    @classmethod
    def from_interactions(cls, data: Interactions) -> UserStore:
        by = "timestamp" if data.timestamp is not None else "order"
        indptr, items = user_sequences(data, by)
        return cls(data.user_vocab.raw, indptr, items)

    def history(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in ("ids", "indptr", "items"):
            np.save(path / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> UserStore:
        path = Path(path)
        return cls(*(_load(path, n) for n in ("ids", "indptr", "items")))
