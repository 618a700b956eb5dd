"""Rankers: score a request's candidates. The pipeline's ranking stages accept anything with

    score(user: int | None, items: np.ndarray, history: np.ndarray, context: Mapping) -> np.ndarray | None

(None = "cannot score this request", e.g. a user-id model on an anonymous request: the stage
then keeps the previous order). Adapters here turn any recstack `Recommender` into a ranker;
other kinds (e.g. CTR models) plug in with `register_ranker`. Rankers are declared as JSON
specs (`{"kind": "recommender", "model": "two_tower"}`) and built against a bundle's assets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recstack.models.base import Recommender
from recstack.pipeline.embedding import QueryEncoder
from recstack.pipeline.matrices import aggregate_rows, aggregate_rows_batch


class Ranker(Protocol):
    """A ranking model for the pipeline's coarse / fine stages."""

    name: str

    def score(self, user: int | None, items: np.ndarray, history: np.ndarray,
              context: Mapping[str, Any]) -> np.ndarray | None:
        """Scores (float, higher = better) aligned with `items`, or None to abstain."""
        ...


Scores = np.ndarray | None


def score_many(ranker: Ranker, users: Sequence[int | None], items: Sequence[np.ndarray],
               histories: Sequence[np.ndarray], contexts: Sequence[Mapping[str, Any]]
               ) -> list[Scores | Exception]:
    """`ranker.score` of several requests (aligned sequences), in order: one batched call
    (`score_batch`, same arguments, a list back) when the ranker has one, else one call per
    request. A request that fails gets its exception in its slot; when the batched call itself
    fails, the requests are retried one by one, so one bad request never fails the others."""
    batch = getattr(ranker, "score_batch", None)
    if batch is not None and len(items) > 1:
        try:
            return list(batch(users, items, histories, contexts))
        except Exception:  # noqa: BLE001 - isolate the failing request below
            pass
    out: list[Scores | Exception] = []
    for args in zip(users, items, histories, contexts, strict=True):
        try:
            out.append(ranker.score(*args))
        except Exception as e:  # noqa: BLE001 - reported for this request only
            out.append(e)
    return out


def _split(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """`flat` cut into consecutive pieces of `sizes`."""
    return np.split(flat, np.cumsum(sizes)[:-1]) if len(sizes) else []


class EmbeddingRanker:
    """<query, item> of an embedding model (two-tower, MF, ...): the light, coarse ranker."""

    def __init__(self, name: str, encoder: QueryEncoder) -> None:
        self.name, self.encoder = name, encoder

    def score(self, user, items, history, context):
        q = self.encoder.query(user, history)
        return None if q is None else self.encoder.item_table[items] @ q

class ItemItemRanker:
    """sum over the recent history h of weight(h) * W[h, item], for item-item models: ItemKNN
    (sparse similarities) or EASE (dense weights). Works for any user with a history, known or
    not, and reacts to the request's recent items at once."""

    def __init__(self, name: str, weights: sp.csr_matrix | torch.Tensor, history_len: int = 200,
                 decay: float = 1.0) -> None:
        self.name, self.weights, self.history_len, self.decay = name, weights, history_len, decay

    def score(self, user, items, history, context):
        hist = history[-self.history_len :][::-1]
        if hist.size == 0:
            return None
        w = (self.decay ** np.arange(len(hist))).astype(np.float32)
        if isinstance(self.weights, torch.Tensor):  # dense: gather the [h, items] block
            block = self.weights[torch.from_numpy(hist)][:, torch.from_numpy(items)]
            return (torch.from_numpy(w) @ block).numpy()
        return aggregate_rows(self.weights, hist, w)[items]

    def score_batch(self, users, items, histories, contexts):
        """Sparse weights: every request's history rows summed by one `aggregate_rows_batch`
        (same sums as `score`); dense weights: per request."""
        if isinstance(self.weights, torch.Tensor):
            return [self.score(*a) for a in zip(users, items, histories, contexts, strict=True)]
        hists = [h[-self.history_len :][::-1] for h in histories]
        live = [j for j, h in enumerate(hists) if h.size]
        out: list[Scores] = [None] * len(items)
        if live:
            rows = aggregate_rows_batch(self.weights, [hists[j] for j in live],
                                        [(self.decay ** np.arange(len(hists[j]))).astype(np.float32) for j in live])
            for j, row in zip(live, rows, strict=True):
                out[j] = row[items[j]]
        return out


class PopularityRanker:
    """log(1 + training interactions) of each item: the prior every ranking model learns first."""

    def __init__(self, name: str, popularity: np.ndarray) -> None:
        self.name, self.log_pop = name, np.log1p(np.asarray(popularity, np.float32))

    def score(self, user, items, history, context):
        return self.log_pop[items]

    def score_batch(self, users, items, histories, contexts):
        sizes = [len(i) for i in items]
        return _split(self.log_pop[np.concatenate(items)], sizes) if sum(sizes) else [self.log_pop[i] for i in items]


class ModelRanker:
    """Any Recommender through `model.score` (known users only; costs one `score_all` row)."""

    def __init__(self, name: str, model: Recommender) -> None:
        self.name, self.model = name, model

    def score(self, user, items, history, context):
        if user is None or user >= self.model.n_users_:
            return None
        return self.model.score(np.full(len(items), user, np.int64), items)


class BlendRanker:
    """Weighted sum of z-normalised scores of other rankers (those that abstain are left out)."""

    def __init__(self, name: str, parts: list[tuple[Ranker, float]]) -> None:
        if not parts:
            raise ValueError(f"ranker '{name}': a blend needs at least one part")
        self.name, self.parts = name, parts

    def score(self, user, items, history, context):
        total, used = np.zeros(len(items), np.float64), False
        n = len(items)
        for ranker, weight in self.parts:
            s = ranker.score(user, items, history, context)
            if s is None:
                continue
            used = True
            if n == 0:
                continue
            # the arithmetic of s.mean() / s.std() (same sums, bit for bit) without their Python
            # wrappers, in place: ~10 calls per request on the serving path
            d = np.array(s, np.float64)
            d -= np.add.reduce(d) / n
            sd = math.sqrt(np.add.reduce(d * d) / n)
            if sd > 0:
                d /= sd
                d *= weight
                total += d
        return total.astype(np.float32) if used else None

    def score_batch(self, users, items, histories, contexts):
        """`score` of several requests: each part scores all of them at once (`score_many`),
        and the per-request z-normalisation runs over the concatenated scores with segment
        sums (`np.add.reduceat`), so the cost per part does not grow with one Python step per
        request. Equal to `score` to float64 rounding (the sums' order differs), float32 out."""
        b = len(items)
        sizes = np.array([len(i) for i in items], np.int64)
        total = np.zeros(int(sizes.sum()), np.float64)
        seg = np.repeat(np.arange(b), sizes)
        used = np.zeros(b, bool)
        failed: dict[int, Exception] = {}
        for ranker, weight in self.parts:
            outs = score_many(ranker, users, items, histories, contexts)
            live = []
            for j, s in enumerate(outs):
                if isinstance(s, Exception):
                    failed.setdefault(j, s)
                elif s is not None:
                    used[j] = True
                    if sizes[j]:
                        live.append(j)
            if not live:
                continue
            n = sizes[live]
            d = np.concatenate([np.asarray(outs[j], np.float64).reshape(-1) for j in live])
            if len(d) != n.sum():
                raise ValueError(f"ranker '{ranker.name}' returned scores not aligned with the items")
            starts = np.cumsum(n) - n
            d -= np.repeat(np.add.reduceat(d, starts) / n, n)
            sd = np.sqrt(np.add.reduceat(d * d, starts) / n)
            d /= np.repeat(np.where(sd > 0, sd, 1.0), n)
            d *= weight
            d[np.repeat(sd == 0, n)] = 0.0  # a constant part adds nothing, as in `score`
            mask = np.zeros(b, bool)
            mask[live] = True
            total[mask[seg]] += d
        out: list[Scores | Exception] = []
        for j, part in enumerate(_split(total, sizes)):
            out.append(failed[j] if j in failed else part.astype(np.float32) if used[j] else None)
        return out


def recommender_ranker(name: str, model: Recommender, encoder: Callable[[], QueryEncoder],
                       history_len: int = 200, decay: float = 1.0) -> Ranker:
    """The best adapter for `model`: item-item weights when it has them (ItemKNN `sim_`, EASE
    `B_`), embeddings when it is an embedding model, else `model.score`."""
    if isinstance(getattr(model, "sim_", None), sp.spmatrix):
        return ItemItemRanker(name, model.sim_.tocsr(), history_len, decay)
    if isinstance(getattr(model, "B_", None), torch.Tensor):
        return ItemItemRanker(name, model.B_.float().cpu(), history_len, decay)
    try:
        return EmbeddingRanker(name, encoder())
    except TypeError:  # not an embedding model
        return ModelRanker(name, model)


# ---- building rankers from specs ----------------------------------------------------------------
RankerFactory = Callable[[str, dict[str, Any], "RankerContext"], Ranker]
_FACTORIES: dict[str, RankerFactory] = {}


def register_ranker(kind: str, factory: RankerFactory) -> None:
    """Make `{"kind": kind, ...}` specs buildable: factory(name, spec, context) -> Ranker."""
    _FACTORIES[kind] = factory


class RankerContext:
    """What a ranker factory may use: the bundle's assets, and other rankers by name."""

    def __init__(self, assets: Any, specs: Mapping[str, dict[str, Any]]) -> None:
        self.assets, self.specs = assets, specs
        self._built: dict[str, Ranker] = {}
        self._building: set[str] = set()

    def ranker(self, name: str) -> Ranker:
        if name in self._built:
            return self._built[name]
        if name not in self.specs:
            raise ValueError(f"unknown ranker '{name}'; declared: {sorted(self.specs)}")
        if name in self._building:
            raise ValueError(f"ranker '{name}' refers to itself (cycle in blend parts)")
        spec = dict(self.specs[name])
        kind = spec.pop("kind", None)
        if kind not in _FACTORIES:
            raise ValueError(f"ranker '{name}': kind {kind!r} unknown; registered: {sorted(_FACTORIES)}")
        self._building.add(name)
        try:
            self._built[name] = _FACTORIES[kind](name, spec, self)
        finally:
            self._building.discard(name)
        return self._built[name]


def _check_keys(name: str, spec: dict[str, Any], allowed: set[str]) -> None:
    bad = set(spec) - allowed
    if bad:
        raise ValueError(f"ranker '{name}': unknown key(s) {sorted(bad)}; valid: {sorted(allowed)}")


def _recommender_factory(name: str, spec: dict[str, Any], ctx: RankerContext) -> Ranker:
    _check_keys(name, spec, {"model", "history_len", "decay"})
    if "model" not in spec:
        raise ValueError(f"ranker '{name}': kind 'recommender' needs `model`")
    model = ctx.assets.model(spec["model"])
    return recommender_ranker(name, model, lambda: ctx.assets.encoder(spec["model"]),
                              spec.get("history_len", 200), spec.get("decay", 1.0))


def _matrix_factory(name: str, spec: dict[str, Any], ctx: RankerContext) -> Ranker:
    _check_keys(name, spec, {"matrix", "history_len", "decay"})
    if "matrix" not in spec:
        raise ValueError(f"ranker '{name}': kind 'matrix' needs `matrix`")
    return ItemItemRanker(name, ctx.assets.matrix(spec["matrix"]), spec.get("history_len", 200),
                          spec.get("decay", 1.0))


def _popularity_factory(name: str, spec: dict[str, Any], ctx: RankerContext) -> Ranker:
    _check_keys(name, spec, set())
    return PopularityRanker(name, ctx.assets.catalog.popularity)


def _ctr_factory(name: str, spec: dict[str, Any], ctx: RankerContext) -> Ranker:
    _check_keys(name, spec, {"extra"})
    if "extra" not in spec:
        raise ValueError(f"ranker '{name}': kind 'ctr' needs `extra` (the saved ranker's directory name)")
    from recstack.pipeline.ctr import load_ctr_ranker

    a = ctx.assets
    return load_ctr_ranker(name, a.extra(spec["extra"]), a.catalog, a.users)


def _blend_factory(name: str, spec: dict[str, Any], ctx: RankerContext) -> Ranker:
    _check_keys(name, spec, {"parts"})
    parts = spec.get("parts") or []
    try:
        return BlendRanker(name, [(ctx.ranker(p["ranker"]), float(p.get("weight", 1.0))) for p in parts])
    except (KeyError, TypeError):
        raise ValueError(f"ranker '{name}': parts must be a list of {{ranker, weight}}") from None


register_ranker("recommender", _recommender_factory)
register_ranker("matrix", _matrix_factory)
register_ranker("popularity", _popularity_factory)
register_ranker("ctr", _ctr_factory)
register_ranker("blend", _blend_factory)
