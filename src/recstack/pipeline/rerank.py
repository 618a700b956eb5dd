"""The re-ranking stage: freshness boost, MMR diversity, per-category caps and promoted slots,
with the rule that placed each returned item. Ineligible items (seen, blocked, filtered) never
reach this stage: `Request.eligible` removes them right after retrieval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recstack.pipeline.catalog import ItemCatalog
from recstack.pipeline.config import RerankConfig
from recstack.pipeline.request import Request

# rules reported in traces
SCORE, FRESHNESS, MMR, CAP, PROMOTED, EXPLORE = ("score", "freshness", "mmr", "category_cap", "promoted",
                                                 "explore")
BACKFILL = "backfill"  # the category cap emptied the ranked candidates: most popular eligible items


@dataclass
class Reranked:
    """The final list: `positions` index the candidate arrays (-1 = promoted from outside)."""

    items: np.ndarray
    positions: np.ndarray
    scores: np.ndarray
    rules: list[str]


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.ones_like(x) if hi <= lo else (x - lo) / (hi - lo)


class Reranker:
    """Applies `RerankConfig` to the fine stage's output.

    Args:
        config: the rules.
        catalog: freshness and primary categories.
        item_vectors: L2-normalised item embeddings for MMR similarity (needed when
            mmr_lambda < 1).
        promoted: (item index, slot) pairs, already encoded.

    With ``config.explore``, the last slots (at most ``max_share`` of k) go to items with at most
    ``max_popularity`` training interactions, picked by a bandit (`self.explorer`) that the
    service's feedback updates; their rule is "explore".
    """

    def __init__(self, config: RerankConfig, catalog: ItemCatalog, item_vectors: np.ndarray | None = None,
                 promoted: list[tuple[int, int]] | None = None) -> None:
        if config.mmr_lambda < 1 and item_vectors is None:
            raise ValueError("rerank: MMR needs item vectors")
        self.config, self.catalog = config, catalog
        if item_vectors is not None:
            norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
            item_vectors = (item_vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        self.vectors = item_vectors
        self.promoted = sorted(promoted or [], key=lambda p: p[1])
        self.explorer, self.explore_pool = None, np.zeros(0, np.int64)
        ex = config.explore
        if ex is not None:
            from recstack.pipeline.exploration import make_explorer

            self.explorer = make_explorer(ex.policy, catalog.n_items, ex.max_share, ex.seed, ex.epsilon)
            self.explore_pool = np.flatnonzero(np.asarray(catalog.popularity) <= ex.max_popularity).astype(np.int64)

    def run(self, items: np.ndarray, scores: np.ndarray, req: Request) -> Reranked:
        """Pick `req.k` of the (eligible) `items` given the last stage's `scores`."""
        cfg, k = self.config, req.k
        if len(items) == 0:
            pos, final, rules = np.zeros(0, np.int64), np.zeros(0, np.float32), []
        else:
            rel = _minmax(np.asarray(scores, np.float64))
            final = rel + cfg.freshness_weight * self.catalog.freshness[items]
            if cfg.mmr_lambda >= 1 and cfg.category_cap is None:
                pos, rules = self._by_score(items, rel, final, k)
            else:
                pos, rules = self._greedy(items, rel, final, k)
            final = final[pos].astype(np.float32)
        out_items = items[pos]
        if cfg.category_cap is not None and len(pos) < k:
            out_items, pos, final, rules = self._backfill(out_items, pos, final, rules, req, k)
        out = self._explore(Reranked(out_items, pos, final, rules), items, req, k)
        return self._promote(out, items, req, k)

    def _backfill(self, picked: np.ndarray, pos: np.ndarray, final: np.ndarray, rules: list[str],
                  req: Request, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Fill the slots the category cap left empty (every ranked candidate's category is full)
        with the most popular eligible items of categories still under the cap (rule
        "backfill", no score). Runs only on that short path: O(catalogue) vectorised work."""
        cap, cats = self.config.category_cap, self.catalog.primary_category
        order = np.argsort(-np.asarray(self.catalog.popularity, np.float64), kind="stable")
        order = order[req.eligible(order) & ~np.isin(order, picked)]
        counts = np.bincount(cats[picked][cats[picked] >= 0], minlength=len(self.catalog.category_names))
        c = cats[order]
        grouped = np.argsort(c, kind="stable")  # by category, popularity order within each
        gc = c[grouped]
        start = np.searchsorted(gc, gc, side="left")
        rank = np.arange(len(gc)) - start  # 0-based rank within the category
        room = np.where(gc >= 0, cap - counts[np.maximum(gc, 0)], len(gc))  # uncategorised: no cap
        ok = np.zeros(len(order), bool)
        ok[grouped] = rank < room
        extra = order[ok][: k - len(picked)].astype(np.int64)
        if not len(extra):
            return picked, pos, final, rules
        return (np.concatenate([picked, extra]), np.concatenate([pos, np.full(len(extra), -1, np.int64)]),
                np.concatenate([final, np.full(len(extra), np.nan, np.float32)]),
                [*rules, *([BACKFILL] * len(extra))])

    def _explore(self, out: Reranked, candidates: np.ndarray, req: Request, k: int) -> Reranked:
        """Give the last exploration slots to pool items the bandit picks (eligible ones only)."""
        if self.explorer is None or len(self.explore_pool) == 0:
            return out
        pool = self.explore_pool[req.eligible(self.explore_pool)]
        slate = self.explorer.rerank(out.items, pool, k)
        n_kept = int(np.sum(slate[: len(out.items)] == out.items[: len(slate)]))
        if len(slate) == len(out.items) and n_kept == len(slate):
            return out
        where = {int(it): j for j, it in enumerate(candidates.tolist())}
        keep = min(n_kept, len(out.items))
        new = slate[keep:]
        return Reranked(
            np.concatenate([out.items[:keep], new]).astype(np.int64),
            np.concatenate([out.positions[:keep], [where.get(int(i), -1) for i in new]]).astype(np.int64),
            np.concatenate([out.scores[:keep], np.full(len(new), np.nan, np.float32)]).astype(np.float32),
            [*out.rules[:keep], *([EXPLORE] * len(new))])

    def _by_score(self, items, rel, final, k):
        pos = np.lexsort((items, -final))[:k]
        if self.config.freshness_weight == 0:
            return pos, [SCORE] * len(pos)
        rel_rank = np.empty(len(items), np.int64)
        rel_rank[np.lexsort((items, -rel))] = np.arange(len(items))
        rules = [FRESHNESS if rel_rank[p] > j else SCORE for j, p in enumerate(pos.tolist())]
        return pos, rules

    def _greedy(self, items, rel, final, k):
        """One pick per output slot (k Python steps, each a few vectorised ops over the
        candidates). Masks are kept as additive penalties (0 / -inf) updated in place: `taken`
        (picked) and `blocked` (picked or category full)."""
        cfg = self.config
        lam, cap = cfg.mmr_lambda, cfg.category_cap
        m = len(items)
        cats = self.catalog.primary_category[items]
        counts = np.zeros(len(self.catalog.category_names) + 1, np.int64)
        vecs = self.vectors[items] if lam < 1 else None
        # MMR objective lam * final - (1 - lam) * max_sim: the scaled terms are kept up to date
        # instead of recomputed (scaling by a positive constant commutes with the running max)
        lam_final = lam * final
        sim_pen = np.zeros(m)  # (1 - lam) * max similarity to the picks so far
        taken = np.zeros(m)  # -inf once picked
        blocked = np.zeros(m)  # taken + (-inf once the item's category is full)
        fresh = cfg.freshness_weight > 0
        picks, rules = [], []
        for _ in range(min(k, m)):
            ok_final = final + blocked
            top_ok = int(ok_final.argmax())
            if ok_final[top_ok] == -np.inf:
                break
            pick = top_ok
            if vecs is not None:
                pick = int(((lam_final - sim_pen) + blocked).argmax())
            if pick != top_ok:
                rule = MMR
            elif cap is not None and pick != int((final + taken).argmax()):
                rule = CAP
            elif fresh and pick != int((rel + taken).argmax()):
                rule = FRESHNESS
            else:
                rule = SCORE
            picks.append(pick)
            rules.append(rule)
            taken[pick] = blocked[pick] = -np.inf
            c = cats[pick]
            if c >= 0:
                counts[c] += 1
                if cap is not None and counts[c] >= cap:
                    blocked[cats == c] = -np.inf
            if vecs is not None:
                sim = (vecs @ vecs[pick]).astype(np.float64)
                sim *= 1 - lam
                np.maximum(sim_pen, sim, out=sim_pen)
        return np.asarray(picks, np.int64), rules

    def _promote(self, out: Reranked, candidates: np.ndarray, req: Request, k: int) -> Reranked:
        """Insert the eligible promoted items at their slots (k Python steps at most)."""
        if not self.promoted:
            return out
        where = {int(it): j for j, it in enumerate(candidates.tolist())}
        items, pos, scores, rules = list(out.items.tolist()), list(out.positions.tolist()), list(out.scores.tolist()), list(out.rules)
        cand = dict(zip(out.items.tolist(), range(len(items)), strict=True))
        ok = req.eligible(np.asarray([p[0] for p in self.promoted], np.int64))
        for (item, slot), eligible in zip(self.promoted, ok.tolist(), strict=True):
            if not eligible or slot >= k:
                continue
            j = cand.get(item)
            p, s = (pos[j], scores[j]) if j is not None else (where.get(item, -1), float("nan"))
            if j is not None:
                for lst in (items, pos, scores, rules):
                    del lst[j]
            at = min(slot, len(items))
            items.insert(at, item)
            pos.insert(at, p)
            scores.insert(at, s)
            rules.insert(at, PROMOTED)
            cand = {it: i for i, it in enumerate(items)}
        return Reranked(np.asarray(items[:k], np.int64), np.asarray(pos[:k], np.int64),
                        np.asarray(scores[:k], np.float32), rules[:k])
