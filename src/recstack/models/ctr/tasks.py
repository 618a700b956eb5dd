"""CTR tasks built from data sets: labelled events with user/item attributes and history.

    task = interactions_ctr_task(load("atomic:../shared/data/movielens-100k"))
    model = create_model("din").fit(task)          # recstack.models.create_model

An interaction log with ratings becomes impressions labelled ``rating >= threshold`` ("label"),
with "like" (the top rating) as a second task and the rating as the positive weight ("weight").
Every event carries the user's state at that moment, computed only from events strictly
earlier in time (ties in time excluded, so neither the target nor anything rated in the same
second leaks in): the last `history_len` items ("history"), the last clicked ones ("liked"),
the number of earlier events and their click rate. The split is temporal on global time
(valid, test = the latest events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from recstack.data.dataset import Interactions
from recstack.data.errors import DataError
from recstack.data.transforms import split_temporal
from recstack.features.specs import (
    Bucketized,
    Categorical,
    Cross,
    FeatureSpec,
    IdSequence,
    MultiHot,
    Numeric,
)
from recstack.features.store import FeatureStore, list_series


@dataclass
class CTRTask:
    """Train/valid/test frames, the feature schema and the store for serving."""

    train: pl.DataFrame
    valid: pl.DataFrame | None
    test: pl.DataFrame
    features: list[FeatureSpec]
    store: FeatureStore | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _earlier(user: np.ndarray, timestamp: np.ndarray, include: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, first, end): the counted events sorted by (user, time); per event, the range
    ``order[first:end]`` of the same user's counted events strictly earlier in time."""
    n = len(user)
    _, trank = np.unique(timestamp, return_inverse=True)
    span = int(trank.max(initial=0)) + 2
    key = user.astype(np.int64) * span + trank.reshape(-1)
    keep = np.flatnonzero(include) if include is not None else np.arange(n)
    order = keep[np.argsort(key[keep], kind="stable")]
    skey = key[order]
    end = np.searchsorted(skey, key, side="left")
    first = np.searchsorted(skey, user.astype(np.int64) * span, side="left")
    return order, first, end


def recent_history(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, max_len: int,
                   include: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each event's last `max_len` items of the same user with a strictly earlier timestamp
    (only events where `include` is True count, e.g. the clicked ones).

    Returns CSR ``(offsets [n+1], items)``: event r's history is ``items[offsets[r]:offsets[r+1]]``,
    oldest first. Vectorised: one sort and two binary searches.
    """
    order, first, end = _earlier(user, timestamp, include)
    start = np.maximum(first, end - max_len)
    lens = end - start
    offsets = np.zeros(len(user) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    pos = np.repeat(start, lens) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens))
    return offsets, item[order][pos]


def past_rate(user: np.ndarray, timestamp: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the number of the user's strictly earlier events and their mean label (NaN when
    there are none): the user's historical click rate as known at that moment."""
    order, first, end = _earlier(user, timestamp, None)
    cs = np.concatenate([[0.0], np.cumsum(label[order].astype(np.float64))])
    count = end - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, np.where(count > 0, (cs[end] - cs[first]) / np.maximum(count, 1), np.nan)


def _numeric_text(s: pl.Series) -> bool:
    """A text column whose values are numbers but for at most 1% (e.g. a year read as tokens,
    with a stray "unknown": those become missing)."""
    if s.dtype != pl.String:
        return False
    x = s.drop_nulls()
    return len(x) > 0 and x.cast(pl.Float64, strict=False).null_count() <= 0.01 * len(x)


def _attribute_specs(frame: pl.DataFrame, key: str, min_freq: int) -> tuple[list[FeatureSpec], list[str]]:
    """Specs of a store frame's attribute columns, and names of its low-cardinality categoricals
    (cross candidates)."""
    specs: list[FeatureSpec] = []
    crossable: list[str] = []
    for c in frame.columns:
        if c == key:
            continue
        s = frame[c]
        if isinstance(s.dtype, pl.List):
            specs.append(MultiHot(c, max_len=int(s.list.len().max() or 1)))
        elif s.dtype.is_numeric():
            specs += [Numeric(c), Bucketized(f"{c}_bucket", column=c, n_buckets=10)]
            crossable.append(f"{c}_bucket")
        else:
            specs.append(Categorical(c, min_freq=min_freq))
            if s.n_unique() <= 100:
                crossable.append(c)
    return specs, crossable


def interactions_ctr_task(data: Interactions, threshold: float = 4.0, history_len: int = 20,
                          valid_frac: float = 0.1, test_frac: float = 0.1, min_freq: int = 2
                          ) -> CTRTask:
    """An explicit-rating log as a CTR task (see the module docstring).

    Features: user id, item id, every user/item attribute (numbers: standardised and
    bucketised; text: categorical; lists: multi-hot), the two id sequences (sharing the item
    vocabulary), the user's earlier-event count and click rate, and exact crosses of the user's
    and the item's low-cardinality attributes (for wide parts). Ids and values seen fewer than
    `min_freq` times in train share the OOV code. The store holds each user's state after the
    whole log, for serving.
    """
    if data.rating is None or data.timestamp is None:
        raise DataError(f"{data.name}: a CTR task needs ratings and timestamps")
    store = FeatureStore.from_interactions(data)
    # attribute columns that are numbers written as text (age, year) become numbers
    for name in ("users", "items"):
        frame = getattr(store, name)
        casts = [pl.col(c).cast(pl.Float64, strict=False) for c in frame.columns
                 if c not in (store.user_key, store.item_key) and _numeric_text(frame[c])]
        setattr(store, name, frame.with_columns(casts))
    label = data.rating >= threshold
    # request-time user state, strictly before each event: recent items, recent clicked items,
    # number of earlier events and their click rate. Per user, the same state after the whole
    # log (a virtual event after the last one) is what serving requests use.
    nu, n = data.n_users, len(data)
    user = np.concatenate([data.user, np.arange(nu)])
    item = np.concatenate([data.item, np.zeros(nu, data.item.dtype)])
    t = np.concatenate([data.timestamp, np.full(nu, data.timestamp.max() + 1, data.timestamp.dtype)])
    lab = np.concatenate([label, np.zeros(nu, bool)])
    is_event = np.r_[np.ones(n, bool), np.zeros(nu, bool)]
    off, hist = recent_history(user, item, t, history_len, include=is_event)
    loff, liked = recent_history(user, item, t, history_len, include=is_event & lab)
    count, rate = past_rate(user[:n], t[:n], lab[:n])
    count = np.concatenate([count, np.bincount(data.user, minlength=nu)])
    pos = np.bincount(data.user, weights=label.astype(float), minlength=nu)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.concatenate([rate, np.where(count[n:] > 0, pos / np.maximum(count[n:], 1), np.nan)])
    raw_items = pl.Series(data.item_vocab.raw)

    def lists(name: str, o: np.ndarray, v: np.ndarray, rows: slice) -> pl.Series:
        o = o[rows.start: (rows.stop + 1 if rows.stop is not None else None)]
        return list_series(name, o - o[0], raw_items.gather(pl.Series(v[o[0]:o[-1]].astype(np.int64))))

    state = lambda rows: [lists("history", off, hist, rows), lists("liked", loff, liked, rows),  # noqa: E731
                          pl.Series("user_prev_count", count[rows].astype(np.float64)),
                          pl.Series("user_prev_rate", rate[rows])]
    events = pl.DataFrame([
        pl.Series("user_id", data.user_vocab.raw[data.user]),
        pl.Series("item_id", data.item_vocab.raw[data.item]),
        pl.Series("timestamp", data.timestamp),
        pl.Series("rating", data.rating),
        pl.Series("label", label.astype(np.float32)),
        pl.Series("like", (data.rating >= data.rating.max()).astype(np.float32)),
        pl.Series("weight", data.rating.astype(np.float32)),
        *state(slice(0, n)),
    ])
    frame = store.join(events)
    store.histories = pl.DataFrame([pl.Series(store.user_key, data.user_vocab.raw), *state(slice(n, None))])

    sp = split_temporal(data, valid_frac=valid_frac, test_frac=test_frac)
    t = data.timestamp
    is_test = t >= sp.info["cut_test"]
    is_valid = (t >= sp.info["cut_valid"]) & ~is_test if valid_frac > 0 else np.zeros(len(t), bool)
    train = frame.filter(pl.Series(~is_test & ~is_valid))

    user_specs, user_cross = _attribute_specs(store.users, store.user_key, min_freq)
    item_specs, item_cross = _attribute_specs(store.items, store.item_key, min_freq)
    features: list[FeatureSpec] = [Categorical("user_id", min_freq=min_freq),
                                   Categorical("item_id", min_freq=min_freq),
                                   *user_specs, *item_specs,
                                   IdSequence("history", vocab_of="item_id", max_len=history_len),
                                   IdSequence("liked", vocab_of="item_id", max_len=history_len),
                                   Numeric("user_prev_count", transforms=("log", "standardize")),
                                   Numeric("user_prev_rate"),
                                   Bucketized("user_prev_rate_bucket", column="user_prev_rate", n_buckets=10)]
    features += [Cross(f"{a}_x_{b}", (a, b)) for a in user_cross for b in item_cross]
    info = {"threshold": threshold, "history_len": history_len, "rows": frame.height,
            "train": train.height, "valid": int(is_valid.sum()), "test": int(is_test.sum()),
            "positive_rate_train": float(train["label"].mean()), "split": sp.info}
    return CTRTask(train, frame.filter(pl.Series(is_valid)) if valid_frac > 0 else None,
                   frame.filter(pl.Series(is_test)), features, store, info)
