"""Honest, fast evaluation.

* :func:`evaluate_ranking`: full-catalogue top-K metrics (recall, hr, precision, ndcg,
  mrr, map) with deterministic tie-breaking (score desc, then lower item index).
* :func:`evaluate_sampled`: the sampled-negatives protocol, only on request, with every
  key prefixed ``sampled_``.
* Pointwise metrics (:func:`auc`, :func:`group_auc`, :func:`logloss`, :func:`rmse`,
  :func:`mae`), beyond-accuracy metrics over top-k lists, and paired significance tests.
"""

from recstack.evaluation.beyond import (
    coverage,
    gini,
    intra_list_diversity,
    novelty,
    popularity_bias,
)
from recstack.evaluation.pointwise import auc, group_auc, logloss, mae, rmse
from recstack.evaluation.ranking import (
    RANKING_METRICS,
    EmbeddingScorer,
    RankingResult,
    embedding_scorer,
    evaluate_ranking,
    topk,
)
from recstack.evaluation.sampled import embedding_pair_scorer, evaluate_sampled, sample_negatives
from recstack.evaluation.significance import bootstrap_ci, compare, paired_test

__all__ = [
    "RANKING_METRICS",
    "EmbeddingScorer",
    "RankingResult",
    "auc",
    "bootstrap_ci",
    "compare",
    "coverage",
    "embedding_pair_scorer",
    "embedding_scorer",
    "evaluate_ranking",
    "evaluate_sampled",
    "gini",
    "group_auc",
    "intra_list_diversity",
    "logloss",
    "mae",
    "novelty",
    "paired_test",
    "popularity_bias",
    "rmse",
    "sample_negatives",
    "topk",
]
