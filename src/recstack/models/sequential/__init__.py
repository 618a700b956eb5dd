"""Sequential and session-based recommenders: GRU4Rec, Caser, SASRec, BERT4Rec.

All share :class:`SequentialRecommender` (sequences, training examples, losses, histories,
anonymous-session serving); each model file holds only its paper's network.
"""

from recstack.models.sequential.base import SequentialRecommender
from recstack.models.sequential.bert4rec import BERT4Rec
from recstack.models.sequential.caser import Caser
from recstack.models.sequential.gru4rec import GRU4Rec
from recstack.models.sequential.sasrec import SASRec

__all__ = ["SequentialRecommender", "GRU4Rec", "Caser", "SASRec", "BERT4Rec"]
