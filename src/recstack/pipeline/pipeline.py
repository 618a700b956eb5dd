"""The four-stage pipeline: retrieval -> coarse ranking -> fine ranking -> re-ranking, with
per-stage timings and a trace of which source and stage placed each returned item."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recstack.pipeline.assets import Assets
from recstack.pipeline.config import PipelineConfig, SourceConfig, StageConfig
from recstack.pipeline.matrices import top_n
from recstack.pipeline.merge import merge
from recstack.pipeline.rankers import Ranker, RankerContext, score_many
from recstack.pipeline.request import Request, encode_request
from recstack.pipeline.rerank import Reranker
from recstack.pipeline.sources import (
    AnnSource,
    CandidateSource,
    NeighbourSource,
    SequenceModelSource,
    StaticSource,
    candidates_many,
)

STAGES = ("coarse", "fine")

# why a request with a deadline got less than the full pipeline (`PipelineResult.degraded`)
DEGRADED = {
    "skip_fine": "skipped fine ranking, answered from coarse scores",
    "skip_ranking": "skipped the ranking stages, answered in merged retrieval order",
    "popular": "answered from the popular / fresh candidates only (no personalised retrieval or ranking)",
}


@dataclass
class ItemTrace:
    """How one returned item got there."""

    item: int
    sources: list[str]  # the sources that proposed it ("promoted" when a rule inserted it)
    source_ranks: dict[str, int]  # 0-based rank in each proposing source's list
    scores: dict[str, float | None]  # retrieval (fused), coarse, fine, final; None = not scored
    rule: str  # the re-ranking rule that placed it (score, freshness, mmr, category_cap, promoted)


@dataclass
class PipelineResult:
    items: np.ndarray
    scores: np.ndarray
    trace: list[ItemTrace]
    timings_ms: dict[str, float]
    counts: dict[str, int]
    cold_start: bool
    skipped: list[str] = field(default_factory=list)  # stages whose ranker abstained
    note: str | None = None  # why fewer than k items came back (None when k did)
    degraded: str | None = None  # a `DEGRADED` key when the deadline cut work (None: full pipeline)
    left_ms: float | None = None  # ms left of the deadline when the work was cut

    def trace_dicts(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.trace]


class Pipeline:
    """A built pipeline: call `request(...)` to encode raw ids, then `run(request)`."""

    def __init__(self, config: PipelineConfig, assets: Assets, sources: Sequence[CandidateSource],
                 stages: Sequence[tuple[str, StageConfig, Ranker]], reranker: Reranker,
                 blocked: np.ndarray) -> None:
        self.config, self.assets, self.sources = config, assets, list(sources)
        self.stages, self.reranker, self.blocked = list(stages), reranker, blocked
        self.weights = [s.weight for s in config.sources]
        # the cheapest answer under a deadline: the precomputed popular / fresh rankings only
        static = [(s, w) for s, w in zip(self.sources, self.weights, strict=True) if isinstance(s, StaticSource)]
        self.fallback = static or [(StaticSource("popular", assets.catalog.popularity, 200), 1.0)]
        b = config.budget_ms
        # ms a request must have left to run ranking stage j: now (the stage + the re-ranking) ...
        self._need = [getattr(b, name) + b.rerank for name, _, _ in self.stages]
        # ... and at the start (retrieval + stages 0..j + re-ranking, each taking its budget)
        self._plan_ms = [b.retrieval + b.rerank + sum(getattr(b, n) for n, _, _ in self.stages[: j + 1])
                         for j in range(len(self.stages))]
        self.full_ms = b.retrieval + b.rerank  # personalised retrieval + re-ranking
        self.min_budget_ms = b.fallback + b.rerank  # less than this left: shed the request
        # measured ms per request of each part of a batched run (moving averages): a batch's
        # stage takes about that times the batch size, which may exceed the per-request budget
        self.batch_cost_ms = {part: 0.0 for part in ("retrieval", "fallback", *(n for n, _, _ in self.stages), "rerank")}

    def plan(self, left_ms: float) -> str | None:
        """What a request with `left_ms` of its deadline left at the start gets: None (every
        stage), "skip_<stage>" / "skip_ranking" (the ranking stages from there on skipped),
        "popular" (the popular / fresh candidates only) or "shed" (not even that fits)."""
        if left_ms < self.full_ms:
            return "popular" if left_ms >= self.min_budget_ms else "shed"
        fits = sum(left_ms >= ms for ms in self._plan_ms)  # _plan_ms grows: a prefix of the stages
        if fits == len(self.stages):
            return None
        return "skip_ranking" if fits == 0 else f"skip_{self.stages[fits][0]}"

    # ---- requests -------------------------------------------------------------------------------
    def request(self, user_id: Any = None, history: Sequence[Any] = (), k: int | None = None,
                exclude_items: Sequence[Any] = (), categories: Sequence[str] = (),
                exclude_categories: Sequence[str] = (),
                context: Mapping[str, Any] | None = None) -> tuple[Request, list[str]]:
        """Encode raw ids into a `Request` (+ warnings about ignored ids). k out of
        [1, max_k] is an error; unknown ids are not."""
        cfg = self.config
        k = cfg.default_k if k is None else int(k)
        if not 1 <= k <= cfg.max_k:
            raise ValueError(f"k must be in [1, {cfg.max_k}], got {k}")
        return encode_request(self.assets.catalog, self.assets.users, user_id=user_id, history=history,
                              k=k, exclude_items=exclude_items, categories=categories,
                              exclude_categories=exclude_categories, context=context,
                              history_len=cfg.history_len, filter_seen=cfg.rerank.filter_seen,
                              blocked=self.blocked)

    # ---- the stages -----------------------------------------------------------------------------
    def run(self, req: Request, deadline: float | None = None) -> PipelineResult:
        """Run all stages for one request. With a `deadline` (a `time.perf_counter()` time), a
        stage whose planned cost (`config.budget_ms`) plus the re-ranking's no longer fits in
        the time left is skipped, and so are the ranking stages after it; too little time for
        the personalised retrieval answers from the popular / fresh candidates. The result's
        `degraded` says which; with ample time the run is exactly the one without a deadline.
        Costs one comparison per stage (the stage timings already read the clock)."""
        clock = time.perf_counter
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        t_start = clock()
        req.scale = max(1.0, req.k / self.config.default_k)  # pools sized for default_k grow with k
        degraded, left_ms, planned = None, None, len(self.stages)
        sources, weights = self.sources, self.weights
        if deadline is not None:
            left = (deadline - t_start) * 1e3
            if left < self.full_ms:  # shedding is the caller's call; here: the cheapest answer
                degraded, left_ms = "popular", left
                sources, weights = [s for s, _ in self.fallback], [w for _, w in self.fallback]
            elif self.stages and left < self._plan_ms[-1]:
                planned, left_ms = sum(left >= ms for ms in self._plan_ms), left  # stages that fit
        lists = []
        for src in sources:
            t0 = clock()
            items, scores = src.candidates(req)
            timings[f"source.{src.name}"] = (clock() - t0) * 1e3
            counts[f"source.{src.name}"] = len(items)
            lists.append((items, scores))
        t0 = clock()
        cands = merge(lists, weights, self.config.max_candidates)
        timings["merge"] = (clock() - t0) * 1e3
        timings["retrieval"] = (clock() - t_start) * 1e3
        counts["merged"] = len(cands)

        last, skipped = "retrieval", []
        for j, (name, stage, ranker) in enumerate(self.stages):
            t0 = clock()
            if deadline is not None and degraded is None and (j >= planned or (deadline - t0) * 1e3 < self._need[j]):
                # no time for this stage (planned at the start, or an earlier stage ran slow): it and
                # the ranking stages after it are skipped
                degraded = "skip_ranking" if last == "retrieval" else f"skip_{name}"
                if j < planned:
                    left_ms = (deadline - t0) * 1e3
            if degraded is not None:
                s = None
            else:
                s = ranker.score(req.user, cands.items, req.history, req.context) if len(cands) else None
            if s is None:
                skipped.append(name)
                s = np.full(len(cands), np.nan, np.float32)
                order = np.arange(min(req.pool(stage.keep), len(cands)))
            else:
                s = np.asarray(s, np.float32)
                if s.shape != cands.items.shape:
                    raise ValueError(f"ranker '{ranker.name}' returned {s.shape} scores for {len(cands)} items")
                order = np.argsort(-s, kind="stable")[: req.pool(stage.keep)]  # ties keep earlier order
                last = name
            cands.scores[name] = s
            cands = cands.take(order)
            timings[name] = (clock() - t0) * 1e3
            counts[name] = len(cands)

        t0 = clock()
        out = self.reranker.run(cands.items, cands.scores[last], req)
        trace = self._trace(cands, out, [src.name for src in sources])
        timings["rerank"] = (clock() - t0) * 1e3
        timings["total"] = (clock() - t_start) * 1e3
        counts["returned"] = len(out.items)
        note = self._shortfall(req, counts) if len(out.items) < req.k else None
        return PipelineResult(out.items, out.scores, trace, timings, counts, req.cold_start, skipped, note,
                              degraded, left_ms)

    def _batch_ms(self, part: str, n: int) -> float:
        """Planned ms of `part` for `n` requests run together: its budget (`budget_ms`), or the
        measured per-request cost times n when that is more."""
        return max(getattr(self.config.budget_ms, part), self.batch_cost_ms[part] * n)

    def _observe(self, part: str, ms: float, n: int) -> None:
        if n:
            c = self.batch_cost_ms
            c[part] = ms / n if c[part] == 0.0 else 0.8 * c[part] + 0.2 * ms / n

    def run_batch(self, reqs: Sequence[Request], deadlines: Sequence[float | None] | None = None
                  ) -> list[PipelineResult | Exception]:
        """Run several requests together (dynamic micro-batching): every source and ranking
        stage makes one call for all of them (`candidates_batch` / `score_batch` where the
        source or ranker has one: the sequence encoder, the ANN search, the item-item sums, the
        blends and CTR models; per request otherwise), so N concurrent requests cost far less
        than N runs. Merging, ordering and re-ranking stay per request (a few vectorised numpy
        calls each, nothing per candidate).

        Returns one entry per request, in order: the `PipelineResult` that `run(req, deadline)`
        gives (items and order equal; scores equal to float rounding of the batched products),
        or the exception that request raised; one failing request never fails the others.
        Deadlines work per request as in `run`: each request's plan is made at the batch's
        start, and before each ranking stage the requests whose time left no longer pays for it
        skip it and the stages after it. What a stage costs is batch-aware: its budget, or the
        measured cost per request (`batch_cost_ms`) times the batch size when larger, so a large
        batch under tight deadlines degrades requests instead of finishing them late. A
        request's stage timings are the batch's (the time it spent in that stage)."""
        clock = time.perf_counter
        n = len(reqs)
        deadlines = list(deadlines) if deadlines is not None else [None] * n
        if len(deadlines) != n:
            raise ValueError(f"run_batch: {n} requests but {len(deadlines)} deadlines")
        t_start = clock()
        timings: list[dict[str, float]] = [{} for _ in range(n)]
        counts: list[dict[str, int]] = [{} for _ in range(n)]
        errors: list[Exception | None] = [None] * n
        degraded: list[str | None] = [None] * n
        left_ms: list[float | None] = [None] * n
        planned = [len(self.stages)] * n
        full, fallback = [], []
        full_ms = self._batch_ms("retrieval", n) + self._batch_ms("rerank", n)
        plan_ms, acc = [], full_ms
        for name, _, _ in self.stages:
            acc += self._batch_ms(name, n)
            plan_ms.append(acc)
        for j, (req, deadline) in enumerate(zip(reqs, deadlines, strict=True)):
            req.scale = max(1.0, req.k / self.config.default_k)
            if deadline is not None:
                left = (deadline - t_start) * 1e3
                if left < full_ms:
                    degraded[j], left_ms[j] = "popular", left
                    fallback.append(j)
                    continue
                if self.stages and left < plan_ms[-1]:
                    planned[j], left_ms[j] = sum(left >= ms for ms in plan_ms), left
            full.append(j)
        lists: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        names: list[list[str]] = [[] for _ in range(n)]
        weights: list[list[float]] = [[] for _ in range(n)]
        groups = (("retrieval", full, list(zip(self.sources, self.weights, strict=True))),
                  ("fallback", fallback, self.fallback))
        for part, group, sources in groups:
            t_group = clock()
            for src, weight in sources if group else ():
                t0 = clock()
                outs = candidates_many(src, [reqs[j] for j in group])
                dt = (clock() - t0) * 1e3
                for j, got in zip(group, outs, strict=True):
                    if isinstance(got, Exception):
                        errors[j] = errors[j] or got
                        continue
                    timings[j][f"source.{src.name}"] = dt
                    counts[j][f"source.{src.name}"] = len(got[0])
                    lists[j].append(got)
                    names[j].append(src.name)
                    weights[j].append(weight)
            self._observe(part, (clock() - t_group) * 1e3, len(group))
        cands: list[Any] = [None] * n
        t0 = clock()
        for j in range(n):
            if errors[j] is None:
                try:
                    cands[j] = merge(lists[j], weights[j], self.config.max_candidates)
                except Exception as e:  # noqa: BLE001 - this request only
                    errors[j] = e
                    continue
                counts[j]["merged"] = len(cands[j])
        t1 = clock()
        for j in range(n):
            timings[j]["merge"] = (t1 - t0) * 1e3
            timings[j]["retrieval"] = (t1 - t_start) * 1e3

        last, skipped = ["retrieval"] * n, [[] for _ in range(n)]
        for si, (name, stage, ranker) in enumerate(self.stages):
            t0 = clock()
            live = [j for j in range(n) if errors[j] is None]
            need = self._batch_ms(name, sum(degraded[j] is None for j in live)) + self._batch_ms("rerank", len(live))
            run = []
            for j in live:
                deadline = deadlines[j]
                if (deadline is not None and degraded[j] is None
                        and (si >= planned[j] or (deadline - t0) * 1e3 < need)):
                    degraded[j] = "skip_ranking" if last[j] == "retrieval" else f"skip_{name}"
                    if si < planned[j]:
                        left_ms[j] = (deadline - t0) * 1e3
                if degraded[j] is None and len(cands[j]):
                    run.append(j)
            outs = dict(zip(run, score_many(ranker, [reqs[j].user for j in run], [cands[j].items for j in run],
                                            [reqs[j].history for j in run], [reqs[j].context for j in run]),
                            strict=True)) if run else {}
            for j in live:
                s = outs.get(j)
                c = cands[j]
                if isinstance(s, Exception):
                    errors[j] = s
                    continue
                if s is None:
                    skipped[j].append(name)
                    s = np.full(len(c), np.nan, np.float32)
                    order = np.arange(min(reqs[j].pool(stage.keep), len(c)))
                else:
                    s = np.asarray(s, np.float32)
                    if s.shape != c.items.shape:
                        errors[j] = ValueError(f"ranker '{ranker.name}' returned {s.shape} scores for {len(c)} items")
                        continue
                    order = np.argsort(-s, kind="stable")[: reqs[j].pool(stage.keep)]
                    last[j] = name
                c.scores[name] = s
                cands[j] = c.take(order)
            dt = (clock() - t0) * 1e3
            self._observe(name, dt, len(run))
            for j in live:
                if errors[j] is None:
                    timings[j][name] = dt
                    counts[j][name] = len(cands[j])

        results: list[PipelineResult | Exception] = []
        t_rerank = clock()
        for j, req in enumerate(reqs):
            if errors[j] is not None:
                results.append(errors[j])
                continue
            try:
                t0 = clock()
                c = cands[j]
                out = self.reranker.run(c.items, c.scores[last[j]], req)
                trace = self._trace(c, out, names[j])
                t1 = clock()
                timings[j]["rerank"] = (t1 - t0) * 1e3
                timings[j]["total"] = (t1 - t_start) * 1e3
                counts[j]["returned"] = len(out.items)
                note = self._shortfall(req, counts[j]) if len(out.items) < req.k else None
                results.append(PipelineResult(out.items, out.scores, trace, timings[j], counts[j], req.cold_start,
                                              skipped[j], note, degraded[j], left_ms[j]))
            except Exception as e:  # noqa: BLE001 - this request only
                results.append(e)
        self._observe("rerank", (clock() - t_rerank) * 1e3, n)
        return results

    def _shortfall(self, req: Request, counts: dict[str, int]) -> str:
        """Why a request got fewer than k items (only computed when it did): too few eligible
        items in the catalogue, the re-ranking's category cap, or too few candidates retrieved."""
        n = counts["returned"]
        eligible = int(req.eligible(np.arange(self.assets.catalog.n_items, dtype=np.int64)).sum())
        if eligible <= n:
            return (f"only {eligible} catalogue items are eligible for this request (the others are "
                    "seen, excluded, blocked or outside the category filters)")
        cap = self.config.rerank.category_cap
        if cap is not None:  # the re-ranker backfills under the cap: n is all the cap allows
            return (f"the re-ranking's category cap ({cap} items per category) allows {n} of the "
                    f"{eligible} eligible items")
        return f"the candidate sources found {counts['merged']} of the {eligible} eligible items"

    def similar(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The `k` items most similar to item index `item` -> (items, scores, source name).

        Item-to-item neighbours (the first item2item source's matrix) come first; an item with
        too few neighbours is completed from the first ANN source's index with its own vector.
        """
        if not 0 <= item < self.assets.catalog.n_items:
            raise IndexError(f"item index {item} out of range")
        items, scores, used = np.zeros(0, np.int64), np.zeros(0, np.float32), []
        for src in self.sources:
            if isinstance(src, NeighbourSource) and src.kind == "item2item":
                m = src.matrix
                cols, vals = m.indices[m.indptr[item] : m.indptr[item + 1]], m.data[m.indptr[item] : m.indptr[item + 1]]
                keep = (cols != item) & (vals > 0)
                items, scores = top_n(cols[keep].astype(np.int64), vals[keep].astype(np.float32), k)
                used.append(src.name)
                break
        if len(items) < k:
            for src in self.sources:
                if isinstance(src, AnnSource):
                    s, i = src.index.search(src.encoder.item_table[item], k + 1 + len(items))
                    ids, sc = i[0], s[0]
                    keep = (ids >= 0) & (ids != item) & ~np.isin(ids, items)
                    need = k - len(items)
                    items = np.concatenate([items, ids[keep][:need]])
                    scores = np.concatenate([scores, sc[keep][:need]])
                    used.append(src.name)
                    break
        if not used:
            raise LookupError("no item2item or ann source in this pipeline to find similar items")
        return items[:k], scores[:k], "+".join(used)

    def _trace(self, cands, out, names: list[str]) -> list[ItemTrace]:
        """Per returned item (k of them, not per candidate); arrays go to Python lists once, so
        the per-item loop touches no numpy scalars. `names`: the sources that ran, in order."""
        stage_names = ["retrieval", *(n for n, _, _ in self.stages)]
        pos = out.positions  # -1: promoted from outside the candidates
        at = np.maximum(pos, 0)
        ranks = cands.source_ranks[:, at].T.tolist() if len(cands) else None
        table = [(n, cands.scores[n][at].tolist()) for n in stage_names] if len(cands) else []
        finals = out.scores.tolist()
        trace = []
        for j, (item, p) in enumerate(zip(out.items.tolist(), pos.tolist(), strict=True)):
            if p < 0:  # a rule inserted it (promoted, backfill, explore)
                srcs, r, scores = [out.rules[j]], {}, {n: None for n in stage_names}
            else:
                r = {name: rank for name, rank in zip(names, ranks[j], strict=True) if rank >= 0}
                srcs = list(r)
                scores = {n: (None if math.isnan(v[j]) else v[j]) for n, v in table}
            final = finals[j]
            scores["final"] = None if math.isnan(final) else final
            trace.append(ItemTrace(item, srcs, r, scores, out.rules[j]))
        return trace


# ---- building ------------------------------------------------------------------------------------
def _source(cfg: SourceConfig, assets: Assets) -> CandidateSource:
    if cfg.kind == "ann":
        return AnnSource(cfg.name, assets.encoder(cfg.model), assets.index(cfg.index), cfg.n)
    if cfg.kind == "sequential" and cfg.model is not None:
        return SequenceModelSource(cfg.name, assets.model(cfg.model), cfg.n, cfg.last_n)
    if cfg.kind in ("item2item", "sequential"):
        return NeighbourSource(cfg.name, assets.matrix(cfg.matrix), cfg.n, cfg.last_n, cfg.decay, cfg.kind)
    values = assets.catalog.popularity if cfg.kind == "popular" else assets.catalog.freshness
    return StaticSource(cfg.name, values, cfg.n)


def _encode_config_ids(assets: Assets, ids: Sequence[Any], what: str) -> np.ndarray:
    idx = assets.catalog.id_map.lookup(list(ids))
    if (idx < 0).any():
        bad = [ids[j] for j in np.flatnonzero(idx < 0)][:5]
        raise ValueError(f"pipeline config: unknown {what} item id(s) {bad}")
    return idx


def build_pipeline(config: PipelineConfig, assets: Assets) -> Pipeline:
    """Instantiate the sources, rankers and re-ranker that `config` declares from `assets`."""
    assets.history_len = config.history_len
    sources = [_source(s, assets) for s in config.sources]
    ctx = RankerContext(assets, config.rankers)
    stages = [(name, st, ctx.ranker(st.ranker)) for name in STAGES
              if (st := getattr(config, name)) is not None]
    rr = config.rerank
    vectors = assets.encoder(rr.mmr_model).item_table if rr.mmr_model else None
    promoted_idx = _encode_config_ids(assets, [p.item for p in rr.promoted], "promoted")
    promoted = [(int(i), p.slot) for i, p in zip(promoted_idx, rr.promoted, strict=True)]
    blocked = np.unique(_encode_config_ids(assets, rr.blocked_items, "blocked"))
    reranker = Reranker(rr, assets.catalog, vectors, promoted)
    return Pipeline(config, assets, sources, stages, reranker, blocked.astype(np.int64))
