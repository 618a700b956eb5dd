"""Ranking / CTR models: score a few hundred candidates with rich features.

    from recstack.models import create_model
    from recstack.models.ctr import interactions_ctr_task
    task = interactions_ctr_task(data)                     # ML-100K as a CTR task
    model = create_model("deepfm").fit(task)
    model.evaluate(task.test); model.score_candidates(user_id, item_ids)

Models (task "ctr" in `recstack.models.registry`): lr, fm, wide_deep, deepfm, dcn, dcnv2,
xdeepfm, autoint, dlrm, mmoe, din (target attention), youtube_rank (weighted logistic
regression). Each is a `CTRModel` (the estimator) over a `CTRModule` (the network).
"""

from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import FieldEmbedder, FusedEmbedding, LinearTerms
from recstack.models.ctr.optim import FTRL, MultiOptimizer, RowWiseAdagrad
from recstack.models.ctr.tasks import CTRTask, interactions_ctr_task, recent_history

__all__ = [
    "CTRModel", "CTRModule", "CTRConfig",
    "FusedEmbedding", "FieldEmbedder", "LinearTerms", "RowWiseAdagrad", "FTRL", "MultiOptimizer",
    "CTRTask", "interactions_ctr_task", "recent_history",
]
