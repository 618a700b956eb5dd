"""Raw user and item attributes keyed by id: the one place where events (training) and
candidate requests (serving) get their feature columns, by the same code.

    store = FeatureStore.from_interactions(data)          # users/items frames from the data set
    rows = store.join(events)                              # training: attach attributes to events
    rows = store.request(user_id, item_ids, history=...)   # serving: one user x k candidates

Both paths gather the same table rows, so the feature pipeline sees identical raw values.
Frames are saved as Parquet (no pickle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from recstack.data.dataset import FeatureTable, Interactions


def list_series(name: str, offsets: np.ndarray, values: pl.Series) -> pl.Series:
    """A polars list column from CSR offsets [n+1] and flat values (vectorised)."""
    arr = pa.LargeListArray.from_arrays(pa.array(np.asarray(offsets, np.int64), pa.int64()),
                                        values.to_arrow())
    return pl.Series(name, arr)


def table_frame(table: FeatureTable | None, key: str, ids: np.ndarray) -> pl.DataFrame:
    """A FeatureTable as raw columns: row i = entity i, `key` = its raw id; categorical codes ->
    raw values (null when missing), multi-hot -> lists of raw values, numeric -> floats.
    Text columns are left out (embed them first and pass them as precomputed vectors)."""
    cols: list[pl.Series] = [pl.Series(key, ids)]
    if table is not None:
        for name, (codes, vocab) in table.categorical.items():
            idx = pl.Series(np.asarray(codes, np.int64)).replace(-1, None)
            cols.append(pl.Series(name, np.asarray(vocab).astype(str)).gather(idx))
        for name, (off, val, vocab) in table.multihot.items():
            flat = pl.Series(np.asarray(vocab).astype(str)).gather(pl.Series(np.asarray(val, np.int64)))
            cols.append(list_series(name, off, flat))
        for name, x in table.numeric.items():
            if np.ndim(x) == 1:
                cols.append(pl.Series(name, np.asarray(x, np.float64)))
    return pl.DataFrame(cols)


class FeatureStore:
    """Attribute tables of users and items (one row per id) and each user's latest history.

    Args:
        users: frame with column `user_key` (raw ids, unique) and attribute columns.
        items: frame with column `item_key` and attribute columns.
        histories: frame with `user_key` and `history_column` (list of raw item ids, oldest
            first): what a serving request uses when it brings no history of its own.
    """

    def __init__(self, users: pl.DataFrame | None = None, items: pl.DataFrame | None = None,
                 user_key: str = "user_id", item_key: str = "item_id",
                 histories: pl.DataFrame | None = None, history_column: str = "history") -> None:
        self.users, self.items, self.histories = users, items, histories
        self.user_key, self.item_key, self.history_column = user_key, item_key, history_column
        for frame, key in ((users, user_key), (items, item_key), (histories, user_key)):
            if frame is not None:
                if key not in frame.columns:
                    raise ValueError(f"feature store: frame has no key column '{key}'")
                if frame[key].n_unique() != frame.height:
                    raise ValueError(f"feature store: key column '{key}' has duplicate ids")

    @classmethod
    def from_interactions(cls, data: Interactions, user_key: str = "user_id",
                          item_key: str = "item_id") -> FeatureStore:
        """Users/items frames from a data set's feature tables (row i = index i)."""
        return cls(table_frame(data.user_features, user_key, data.user_vocab.raw),
                   table_frame(data.item_features, item_key, data.item_vocab.raw),
                   user_key, item_key)

    # ---- gathering --------------------------------------------------------------------------------
    @staticmethod
    def _rows(table: pl.DataFrame, key: str, ids: pl.Series) -> pl.Series:
        """Row of each id in `table` (null where unknown)."""
        keys = table[key].cast(pl.String)
        pos = pl.Series(np.arange(table.height, dtype=np.int64))
        return ids.cast(pl.String).replace_strict(keys, pos, default=None, return_dtype=pl.Int64)

    def rows_of(self, kind: str, ids: Any) -> np.ndarray:
        """Row (index) of each raw user or item id (`kind` "user" / "item") in the store's
        table, int64, -1 where unknown."""
        table, key = (self.users, self.user_key) if kind == "user" else (self.items, self.item_key)
        if table is None:
            raise ValueError(f"feature store: no {kind} table")
        s = ids if isinstance(ids, pl.Series) else pl.Series([str(x) for x in np.atleast_1d(np.asarray(ids, dtype=object))],
                                                             dtype=pl.String)
        return self._rows(table, key, s).fill_null(-1).to_numpy().astype(np.int64)

    def _attach(self, events: pl.DataFrame, table: pl.DataFrame | None, key: str) -> pl.DataFrame:
        if table is None:
            return events
        if key not in events.columns:
            raise ValueError(f"feature store: events have no '{key}' column")
        rows = self._rows(table, key, events[key])
        extra = [c for c in table.columns if c != key and c not in events.columns]
        return events.with_columns(table.select(extra).select(pl.all().gather(rows)).get_columns())

    def join(self, events: pl.DataFrame) -> pl.DataFrame:
        """`events` (with user/item key columns) plus every user and item attribute, row order
        kept; ids unknown to the store get nulls (the pipeline treats them as missing)."""
        return self._attach(self._attach(events, self.users, self.user_key), self.items, self.item_key)

    def history_of(self, user: Any) -> list[Any]:
        """The stored history (raw item ids, oldest first) of one user; [] if none."""
        if self.histories is None:
            return []
        row = self._rows(self.histories, self.user_key, pl.Series([user]))[0]
        if row is None:
            return []
        value = self.histories[self.history_column][int(row)]
        return [] if value is None else value.to_list()

    def request(self, user: Any, items: Sequence[Any] | np.ndarray,
                history: Sequence[Any] | None = None,
                context: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """The rows a serving request scores: one user x the candidate items.

        The user's stored request-time columns (`histories`: the recent items and any per-user
        statistics kept with them) are attached to every candidate; `history` (raw item ids,
        oldest first) replaces the stored history; `context` values (request time, device, ...)
        are broadcast to every candidate and override stored columns of the same name."""
        items = pl.Series(self.item_key, np.asarray(items))
        k = len(items)
        user_col = pl.Series(self.user_key, [user] * k)
        if self.users is not None and user_col.dtype != self.users[self.user_key].dtype:
            user_col = user_col.cast(self.users[self.user_key].dtype, strict=False)
        if self.items is not None and items.dtype != self.items[self.item_key].dtype:
            items = items.cast(self.items[self.item_key].dtype, strict=False)
        frame = pl.DataFrame([user_col, items])
        if self.histories is not None:
            row = self._rows(self.histories, self.user_key, pl.Series([user]))[0]
            idx = pl.Series([row] * k, dtype=pl.Int64)
            frame = frame.hstack(self.histories.drop(self.user_key).select(pl.all().gather(idx)))
        if history is not None:
            h = pl.Series(list(history))
            if self.items is not None and len(h) and h.dtype != self.items[self.item_key].dtype:
                h = h.cast(self.items[self.item_key].dtype, strict=False)
            flat = pl.concat([h] * k) if k and len(h) else h.head(0)
            frame = frame.with_columns(list_series(self.history_column,
                                                   np.arange(k + 1, dtype=np.int64) * len(h), flat))
        for name, v in (context or {}).items():
            frame = frame.with_columns(pl.Series(name, [v] * k))
        return self.join(frame)

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in ("users", "items", "histories"):
            frame = getattr(self, name)
            if frame is not None:
                frame.write_parquet(path / f"{name}.parquet")
        keys = {"user_key": self.user_key, "item_key": self.item_key,
                "history_column": self.history_column}
        pl.DataFrame({k: [v] for k, v in keys.items()}).write_parquet(path / "keys.parquet")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStore:
        path = Path(path)
        keys = pl.read_parquet(path / "keys.parquet").row(0, named=True)
        frames = {n: pl.read_parquet(path / f"{n}.parquet") if (path / f"{n}.parquet").exists() else None
                  for n in ("users", "items", "histories")}
        return cls(frames["users"], frames["items"], keys["user_key"], keys["item_key"],
                   frames["histories"], keys["history_column"])
