"""Training the pipeline's ranking stages on the candidates they will actually see.

    cands = retrieval_candidates(two_tower, data, n=200, popular=50)   # per user, what retrieval proposes
    task = candidate_ranking_task(data, cands)                          # positives + sampled negatives
    coarse = create_model("fm", dim=8).fit(task.train, task.valid, features=task.features_for("coarse"), store=task.store)
    fine = create_model("din", dim=16).fit(task.train, task.valid, features=task.features, store=task.store)

A rating-labelled CTR task (`recstack.models.ctr.tasks.interactions_ctr_task`) only contains items
the user watched, so its models never learn to tell a watched item from the unwatched ones a
candidate generator proposes. Here every training interaction is a positive (label 1) and its
negatives (label 0) are drawn for the same moment from (a) what the candidate generators propose
for that user (two-tower top-n, the most popular items) and (b) the whole catalogue, uniformly;
negatives never include an item the user interacted with (at any time in `data`). Each row
carries the user's state at the event: the last `history_len` items strictly earlier in time
(ties in time excluded, so neither the target nor anything from the same second leaks in).
Validation = each user's last kept event (+ its negatives), for early stopping.

`train_pipeline_rankers` trains the coarse (light FM) and fine (DIN) rankers and saves them as
`CTRModel.save` directories (JSON + safetensors + Parquet) for a bundle's `extras/`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recstack.data.dataset import Interactions
from recstack.features.specs import Bucketized, Categorical, FeatureSpec, IdSequence, MultiHot
from recstack.features.store import FeatureStore, list_series
from recstack.models.ctr.tasks import recent_history

# coarse: a light FM over ids, genres, popularity and the mean of the recent items;
# fine: DIN target attention over the recent items (small dims: a few ms for 200 candidates)
COARSE_DEFAULTS: dict[str, Any] = {"model": "fm", "dim": 8, "epochs": 8, "batch_size": 1024, "lr": 2e-3,
                                   "patience": 1, "weight_decay": 1e-6, "id_dropout": 0.0}
FINE_DEFAULTS: dict[str, Any] = {"model": "din", "dim": 16, "attention_hidden": (32, 16), "hidden": (64, 32),
                                 "activation": "prelu", "epochs": 8, "batch_size": 1024, "lr": 2e-3,
                                 "patience": 1, "weight_decay": 1e-6, "id_dropout": 0.0, "dropout": 0.0}


@dataclass
class CandidateTask:
    """Train / valid frames of the candidate-ranking task, its feature schema and store."""

    train: pl.DataFrame
    valid: pl.DataFrame
    features: list[FeatureSpec]
    store: FeatureStore
    info: dict[str, Any] = field(default_factory=dict)

    def features_for(self, stage: str) -> list[FeatureSpec]:
        """The schema of a stage: "fine" = all features; "coarse" = the same (the FM mean-pools the
        history instead of attending over it)."""
        if stage not in ("coarse", "fine"):
            raise ValueError(f"stage must be coarse or fine, got {stage!r}")
        return list(self.features)


def retrieval_candidates(model: Any, data: Interactions, n: int = 200, popular: int = 50,
                         batch: int = 256) -> np.ndarray:
    """Per user, the items the candidate generators propose: `model`'s top `n` by full scoring
    (its `score_all`, the user's own items excluded) plus the `popular` most popular items not
    seen by the user. int64 [n_users, n + popular], -1 padded."""
    csr = data.csr()
    nu, ni = data.n_users, data.n_items
    out = np.full((nu, n + popular), -1, np.int64)
    pop_order = np.argsort(-data.item_counts(), kind="stable")
    with torch.inference_mode():
        for s in range(0, nu, batch):
            users = np.arange(s, min(s + batch, nu))
            scores = model.score_all(torch.from_numpy(users)).float().cpu().numpy()
            rows = csr[users]
            scores[rows.nonzero()] = -np.inf
            k = min(n, ni)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1, kind="stable"), 1)
            top = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), top, -1)
            out[users, :k] = top
    for u in range(nu):
        seen = set(csr.indices[csr.indptr[u]:csr.indptr[u + 1]].tolist())
        extra = [i for i in pop_order[: popular + len(seen)].tolist() if i not in seen][:popular]
        out[u, n:n + len(extra)] = extra
    return out


def _sample_negatives(rng: np.random.Generator, users: np.ndarray, candidates: np.ndarray | None,
                      positives: Any, n_items: int, n_retrieved: int, n_uniform: int) -> np.ndarray:
    """[len(users), n_retrieved + n_uniform] item indices, never one of the user's positives
    (-1 where a user's pool is exhausted)."""
    m = n_retrieved + n_uniform
    out = np.full((len(users), m), -1, np.int64)
    indptr, indices = positives.indptr, positives.indices
    for r, u in enumerate(users.tolist()):
        seen = indices[indptr[u]:indptr[u + 1]]
        j = 0
        if n_retrieved and candidates is not None:
            pool = candidates[u]
            pool = pool[(pool >= 0) & ~np.isin(pool, seen)]
            if len(pool):
                take = rng.choice(pool, size=min(n_retrieved, len(pool)), replace=False)
                out[r, : len(take)] = take
                j = len(take)
        need = m - j
        if need and len(seen) < n_items:
            draw = rng.integers(0, n_items, size=4 * need + 8)
            draw = draw[~np.isin(draw, seen) & ~np.isin(draw, out[r, :j])]
            draw = np.unique(draw)[:need] if len(draw) else draw
            out[r, j: j + len(draw)] = draw
    return out


def candidate_ranking_task(data: Interactions, candidates: np.ndarray | None = None, *,
                           n_retrieved: int = 3, n_uniform: int = 1, history_len: int = 20,
                           max_events_per_user: int = 100, seed: int = 0,
                           item_columns: tuple[str, ...] = ("genres", "year")) -> CandidateTask:
    """The candidate-ranking task (see the module docstring).

    Args:
        data: the interactions the models are fitted on (timestamps needed).
        candidates: per user, what retrieval proposes ([n_users, C] item indices, -1 padded;
            `retrieval_candidates`); None = uniform negatives only.
        n_retrieved: negatives per positive drawn from `candidates`.
        n_uniform: negatives per positive drawn uniformly from the catalogue.
        history_len: recent items per row (strictly earlier in time).
        max_events_per_user: positives = each user's last this many interactions (all: None).
        item_columns: item attributes used as features (those the data set has).
    """
    if data.timestamp is None:
        raise ValueError(f"{data.name}: the candidate-ranking task needs timestamps")
    rng = np.random.default_rng(seed)
    nu, ni, n = data.n_users, data.n_items, len(data)
    user, item, t = data.user.astype(np.int64), data.item.astype(np.int64), data.timestamp
    # the user's state strictly before each event (+ one virtual event after the log: serving)
    users_all = np.concatenate([user, np.arange(nu)])
    items_all = np.concatenate([item, np.zeros(nu, np.int64)])
    t_all = np.concatenate([t, np.full(nu, t.max() + 1, t.dtype)])
    is_event = np.r_[np.ones(n, bool), np.zeros(nu, bool)]
    off, hist = recent_history(users_all, items_all, t_all, history_len, include=is_event)
    # positives: each user's last `max_events_per_user` events (by time, ties by row)
    order = np.lexsort((np.arange(n), t, user))
    rank_from_end = np.empty(n, np.int64)
    counts = np.bincount(user, minlength=nu)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos_in_user = np.arange(n) - np.repeat(starts, counts)
    rank_from_end[order] = np.repeat(counts, counts) - 1 - pos_in_user
    keep = np.flatnonzero(rank_from_end < max_events_per_user) if max_events_per_user else np.arange(n)
    is_valid_event = rank_from_end[keep] == 0
    positives = data.csr()
    negs = _sample_negatives(rng, user[keep], candidates, positives, ni, n_retrieved, n_uniform)
    m = negs.shape[1]
    # rows: the positive, then its negatives (same event: same user, time and history)
    ev = np.repeat(keep, 1 + m)
    row_item = np.concatenate([item[keep][:, None], negs], 1).reshape(-1)
    label = np.tile(np.r_[1.0, np.zeros(m)], len(keep)).astype(np.float32)
    ok = row_item >= 0
    ev, row_item, label = ev[ok], row_item[ok], label[ok]
    valid_row = np.repeat(is_valid_event, 1 + m)[ok]
    raw_items = pl.Series(data.item_vocab.raw)
    h_off = off[ev]
    lens = off[ev + 1] - h_off
    flat = hist[np.repeat(h_off, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))]
    offsets = np.concatenate([[0], np.cumsum(lens)])
    frame = pl.DataFrame([
        pl.Series("user_id", data.user_vocab.raw[user[ev]]),
        pl.Series("item_id", data.item_vocab.raw[row_item]),
        pl.Series("timestamp", t[ev]),
        pl.Series("label", label),
        list_series("history", offsets, raw_items.gather(pl.Series(flat.astype(np.int64)))),
    ])
    # the store: item attributes (+ log popularity), users, each user's latest history
    store = FeatureStore.from_interactions(data)
    present = [c for c in item_columns if store.items is not None and c in store.items.columns]
    store.items = store.items.select(store.item_key, *present).with_columns(
        pl.Series("popularity", np.log1p(data.item_counts().astype(np.float64))))
    store.users = store.users.select(store.user_key)
    o = off[n:] - off[n]
    store.histories = pl.DataFrame([
        pl.Series(store.user_key, data.user_vocab.raw),
        list_series("history", o, raw_items.gather(pl.Series(hist[off[n]:off[-1]].astype(np.int64)))),
    ])
    frame = store.join(frame)
    features: list[FeatureSpec] = [Categorical("user_id"), Categorical("item_id")]
    for c in present:
        s = store.items[c]
        if isinstance(s.dtype, pl.List):
            features.append(MultiHot(c, max_len=int(s.list.len().max() or 1)))
        elif s.dtype.is_numeric():
            features.append(Bucketized(f"{c}_bucket", column=c, n_buckets=10))
        else:
            features.append(Categorical(c, min_freq=2))
    features += [Bucketized("popularity_bucket", column="popularity", n_buckets=20),
                 IdSequence("history", vocab_of="item_id", max_len=history_len)]
    train, valid = frame.filter(pl.Series(~valid_row)), frame.filter(pl.Series(valid_row))
    info = {"rows": frame.height, "train": train.height, "valid": valid.height,
            "positives": int(label.sum()), "negatives_per_positive": {"retrieved": n_retrieved, "uniform": n_uniform},
            "history_len": history_len, "max_events_per_user": max_events_per_user, "seed": seed,
            "candidates_per_user": None if candidates is None else int(candidates.shape[1])}
    return CandidateTask(train, valid, features, store, info)


def train_pipeline_rankers(task: CandidateTask, out: str | Path, coarse: dict[str, Any] | None = None,
                           fine: dict[str, Any] | None = None, device: str = "cpu",
                           log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Fit the coarse and fine CTR rankers on `task` and save them under `out/coarse_ctr`,
    `out/fine_ctr` (`CTRModel.save`) -> {name: {"path", "valid": {auc, logloss}, "seconds"}}."""
    from recstack.models.registry import create_model

    out = Path(out)
    report = {}
    for name, params, defaults in (("coarse_ctr", coarse, COARSE_DEFAULTS), ("fine_ctr", fine, FINE_DEFAULTS)):
        p = {**defaults, **(params or {})}
        model = p.pop("model")
        t0 = time.perf_counter()
        r = create_model(model, device=device, **p).fit(
            task.train, task.valid, features=task.features_for("coarse" if name.startswith("coarse") else "fine"),
            store=task.store)
        seconds = time.perf_counter() - t0
        ev = r.evaluate(task.valid, where="validation frame")
        r.save(out / name)
        report[name] = {"model": model, "path": str(out / name), "seconds": round(seconds, 1),
                        "valid": {"auc": round(ev["auc"], 4), "logloss": round(ev["logloss"], 4)}}
        log(f"{name} ({model}): valid AUC {ev['auc']:.4f}, {seconds:.1f} s")
    return report
