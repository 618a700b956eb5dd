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
SCORE, FRESHNESS, MMR, CAP, PROMOTED = "score", "freshness", "mmr", "category_cap", "promoted"


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
        return self._promote(Reranked(out_items, pos, final, rules), items, req, k)

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
