"""The recommendation pipeline, declared as data (`PipelineConfig`):

    candidate sources (ANN, item-to-item, sequential, popular, fresh) -> merge + dedup
    -> coarse ranker (keep N) -> fine ranker (keep M)
    -> re-ranker (filters, freshness, MMR diversity, category caps, promoted slots)

`build_pipeline(config, assets)` instantiates it; `Pipeline.run` returns items, per-stage
timings and a per-item trace.
"""

from recstack.pipeline.assets import Assets
from recstack.pipeline.catalog import ItemCatalog, UserStore
from recstack.pipeline.config import (
    BudgetConfig,
    PipelineConfig,
    PromotedSlot,
    RerankConfig,
    SourceConfig,
    StageConfig,
)
from recstack.pipeline.evaluate import evaluate_pipeline, ranking_metrics
from recstack.pipeline.matrices import load_csr, save_csr, transition_matrix
from recstack.pipeline.pipeline import ItemTrace, Pipeline, PipelineResult, build_pipeline
from recstack.pipeline.rankers import (
    BlendRanker,
    EmbeddingRanker,
    ItemItemRanker,
    ModelRanker,
    PopularityRanker,
    Ranker,
    recommender_ranker,
    register_ranker,
)
from recstack.pipeline.request import Request, encode_request

__all__ = [
    "Assets", "ItemCatalog", "UserStore", "PipelineConfig", "SourceConfig", "StageConfig",
    "RerankConfig", "PromotedSlot", "BudgetConfig", "Pipeline", "PipelineResult", "ItemTrace", "build_pipeline",
    "Ranker", "EmbeddingRanker", "ItemItemRanker", "ModelRanker", "PopularityRanker", "BlendRanker",
    "recommender_ranker", "register_ranker", "Request", "encode_request", "evaluate_pipeline",
    "ranking_metrics", "transition_matrix", "save_csr", "load_csr",
]
