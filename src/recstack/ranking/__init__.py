"""Ranking / CTR models: score a few hundred candidates with rich features.

    from recstack.ranking import Ranker, interactions_ctr_task
    task = interactions_ctr_task(data)                     # ML-100K as a CTR task
    ranker = Ranker("deepfm", features=task.features, store=task.store).fit(task.train, task.valid)
    ranker.evaluate(task.test); ranker.score_candidates(user_id, item_ids)

Models (``ranker_names()``): lr, fm, wide_deep, deepfm, dcn, dcnv2, xdeepfm, autoint, dlrm,
mmoe, din (target attention), youtube_rank (weighted logistic regression).
"""

from recstack.ranking.base import CTRModule, RankerConfig, is_ranker, ranker_class, ranker_names
from recstack.ranking.estimator import Ranker
from recstack.ranking.layers import FieldEmbedder, FusedEmbedding, LinearTerms
from recstack.ranking.optim import FTRL, MultiOptimizer, RowWiseAdagrad
from recstack.ranking.tasks import CTRTask, interactions_ctr_task, recent_history

__all__ = [
    "Ranker", "CTRModule", "RankerConfig", "ranker_class", "ranker_names", "is_ranker",
    "FusedEmbedding", "FieldEmbedder", "LinearTerms", "RowWiseAdagrad", "FTRL", "MultiOptimizer",
    "CTRTask", "interactions_ctr_task", "recent_history",
]
