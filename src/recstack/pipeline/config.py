"""The pipeline declared as data: dataclasses that round-trip through JSON / YAML.

    sources (retrieval, merged + deduplicated) -> coarse ranker (keep N) -> fine ranker (keep M)
    -> re-ranker (filters, freshness, MMR diversity, category caps, promoted slots) -> top k

Names in the config (`model`, `index`, `matrix`, `ranker`) refer to assets of a bundle (see
`recstack.pipeline.assets.Assets`), so the same config works for any trained models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

SOURCE_KINDS = ("ann", "item2item", "sequential", "popular", "fresh")


def _from_dict(cls, d: dict[str, Any], what: str):
    """cls(**d), with unknown keys reported instead of silently dropped."""
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**d)


@dataclass
class SourceConfig:
    """One candidate source.

    Args:
        name: label used in traces and timings (unique).
        kind: "ann" (query embedding -> vector index) | "item2item" (neighbours of the recent
            items in an item-item matrix) | "sequential" (next-item transitions from the
            latest items) | "popular" | "fresh".
        n: candidates this source contributes (after removing ineligible items).
        weight: weight in the reciprocal-rank fusion that orders the merged candidates.
        model: embedding model (ann) whose query tower encodes the user, or sequential model
            (sequential) that reads the recent items.
        index: vector index (ann) over that model's item embeddings.
        matrix: item-item matrix (item2item; sequential: next-item transitions).
        last_n: recent items that seed item2item / sequential sources.
        decay: weight of the i-th most recent seed item is decay ** i.
    """

    name: str
    kind: str
    n: int = 200
    weight: float = 1.0
    model: str | None = None
    index: str | None = None
    matrix: str | None = None
    last_n: int = 20
    decay: float = 0.9

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source '{self.name}': kind '{self.kind}' unknown; use one of "
                             f"{', '.join(SOURCE_KINDS)}")
        if self.n < 1 or self.last_n < 1:
            raise ValueError(f"source '{self.name}': n and last_n must be >= 1")
        if not 0 < self.decay <= 1:
            raise ValueError(f"source '{self.name}': decay must be in (0, 1], got {self.decay}")
        if self.kind == "ann" and (self.model is None or self.index is None):
            raise ValueError(f"source '{self.name}': an ann source needs `model` and `index`")
        if self.kind == "item2item" and self.matrix is None:
            raise ValueError(f"source '{self.name}': an item2item source needs `matrix`")
        if self.kind == "sequential" and (self.matrix is None) == (self.model is None):
            raise ValueError(f"source '{self.name}': a sequential source needs either `matrix` "
                             "(next-item transitions) or `model` (a sequential recommender)")


@dataclass
class StageConfig:
    """A ranking stage: score the candidates with `ranker` and keep the best `keep`."""

    ranker: str
    keep: int

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"stage with ranker '{self.ranker}': keep must be >= 1, got {self.keep}")


@dataclass
class BudgetConfig:
    """Planned cost (ms) of each stage on a loaded server. Used only for requests that carry a
    deadline (the service's `deadline_ms`): a ranking stage runs only when the time left pays
    for it and for the re-ranking after it; full retrieval only when the time left pays for it
    and the re-ranking, else the answer comes from the popular / fresh candidates (`fallback`).
    Requests without a deadline ignore them."""

    retrieval: float = 15.0
    coarse: float = 10.0
    fine: float = 15.0
    rerank: float = 5.0  # re-ranking and the answer: always paid
    fallback: float = 2.0  # popular / fresh candidates only (the cheapest answer)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e6:
                raise ValueError(f"budget_ms.{f.name} must be a number of ms in [0, 1e6), got {v!r}")


@dataclass
class PromotedSlot:
    """Business rule: put `item` (raw id) at 0-based position `slot` when it is eligible."""

    item: int | str
    slot: int

    def __post_init__(self) -> None:
        if self.slot < 0:
            raise ValueError(f"promoted item {self.item!r}: slot must be >= 0, got {self.slot}")


@dataclass
class ExploreConfig:
    """Exploration slots in the re-ranking stage (`recstack.pipeline.exploration`): at most
    `max_share` of a response's k slots go to items with little history, picked by a bandit
    that learns their click rate from `POST /feedback`.

    Args:
        policy: "thompson" (Beta-Bernoulli Thompson sampling) or "epsilon_greedy".
        max_share: the share of the k slots that may be explored (0..1).
        max_popularity: the pool: items with at most this many training interactions.
        epsilon: epsilon_greedy only: the chance of a uniformly random pick per slot.
        seed: seed of the bandit's random draws.
    """

    policy: str = "thompson"
    max_share: float = 0.2
    max_popularity: int = 5
    epsilon: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in ("thompson", "epsilon_greedy"):
            raise ValueError(f"rerank.explore: policy must be 'thompson' or 'epsilon_greedy', got {self.policy!r}")
        if not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"rerank.explore: max_share must be in [0, 1], got {self.max_share}")
        if self.max_popularity < 0:
            raise ValueError(f"rerank.explore: max_popularity must be >= 0, got {self.max_popularity}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"rerank.explore: epsilon must be in [0, 1], got {self.epsilon}")


@dataclass
class RerankConfig:
    """The last stage.

    Args:
        filter_seen: never return items the user already interacted with (stored history and
            the request's recent items).
        blocked_items: raw ids never returned (e.g. withdrawn items).
        freshness_weight: final score = normalised fine score + weight * freshness (0..1).
        mmr_lambda: maximal marginal relevance: pick argmax lambda * score - (1 - lambda) *
            max similarity to the items already picked; 1 = no diversification.
        mmr_model: embedding model whose item vectors measure similarity for MMR.
        category_cap: at most this many items of one (primary) category; None = no cap.
        promoted: items pinned to given positions.
        explore: exploration slots for items with little history (None: no exploration).
    """

    filter_seen: bool = True
    blocked_items: list[int | str] = field(default_factory=list)
    freshness_weight: float = 0.0
    mmr_lambda: float = 1.0
    mmr_model: str | None = None
    category_cap: int | None = None
    promoted: list[PromotedSlot] = field(default_factory=list)
    explore: ExploreConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.explore, dict):
            self.explore = _from_dict(ExploreConfig, self.explore, "rerank.explore")
        if not 0 <= self.mmr_lambda <= 1:
            raise ValueError(f"rerank: mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.mmr_lambda < 1 and self.mmr_model is None:
            raise ValueError("rerank: mmr_lambda < 1 needs mmr_model (whose item vectors measure similarity)")
        if self.category_cap is not None and self.category_cap < 1:
            raise ValueError(f"rerank: category_cap must be >= 1 or null, got {self.category_cap}")
        self.promoted = [p if isinstance(p, PromotedSlot) else _from_dict(PromotedSlot, p, "promoted")
                         for p in self.promoted]


@dataclass
class PipelineConfig:
    """The whole pipeline.

    Args:
        sources: candidate sources (at least one).
        rankers: ranker specs by name, e.g. ``{"tt": {"kind": "recommender", "model": "two_tower"}}``
            (see `recstack.pipeline.rankers.build_ranker`).
        coarse: the first ranking stage (None skips it).
        fine: the second ranking stage (None skips it).
        rerank: the re-ranking stage.
        history_len: recent items of a user that sources and rankers see.
        max_candidates: cap on merged candidates (best by fused retrieval rank).
        default_k: result size when the request gives none.
        max_k: upper bound of the result size.
        budget_ms: planned per-stage cost, for requests with a deadline (`BudgetConfig`).
    """

    sources: list[SourceConfig]
    rankers: dict[str, dict[str, Any]] = field(default_factory=dict)
    coarse: StageConfig | None = None
    fine: StageConfig | None = None
    rerank: RerankConfig = field(default_factory=RerankConfig)
    history_len: int = 50
    max_candidates: int = 1000
    default_k: int = 10
    max_k: int = 100
    budget_ms: BudgetConfig = field(default_factory=BudgetConfig)

    def __post_init__(self) -> None:
        if isinstance(self.budget_ms, dict):
            self.budget_ms = _from_dict(BudgetConfig, self.budget_ms, "budget_ms")
        self.sources = [s if isinstance(s, SourceConfig) else _from_dict(SourceConfig, s, "source")
                        for s in self.sources]
        for name in ("coarse", "fine"):
            v = getattr(self, name)
            if isinstance(v, dict):
                setattr(self, name, _from_dict(StageConfig, v, name))
        if isinstance(self.rerank, dict):
            self.rerank = _from_dict(RerankConfig, self.rerank, "rerank")
        if not self.sources:
            raise ValueError("pipeline: at least one candidate source is needed")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline: source names must be unique, got {names}")
        for stage in (self.coarse, self.fine):
            if stage is not None and stage.ranker not in self.rankers:
                raise ValueError(f"pipeline: stage ranker '{stage.ranker}' is not among rankers "
                                 f"{sorted(self.rankers)}")
        if self.coarse and self.fine and self.fine.keep > self.coarse.keep:
            raise ValueError(f"pipeline: fine.keep ({self.fine.keep}) exceeds coarse.keep ({self.coarse.keep})")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"pipeline: need 1 <= default_k <= max_k, got {self.default_k}, {self.max_k}")
        if self.history_len < 1 or self.max_candidates < 1:
            raise ValueError("pipeline: history_len and max_candidates must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        return _from_dict(cls, d, "pipeline")

    def save(self, path: str | Path) -> Path:
        """Write as JSON (or YAML when the name ends in .yaml / .yml)."""
        path = Path(path)
        text = (yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yaml", ".yml")
                else json.dumps(self.to_dict(), indent=2))
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        """Read a JSON or YAML pipeline config."""
        path = Path(path)
        text = path.read_text()
        d = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        return cls.from_dict(d)
