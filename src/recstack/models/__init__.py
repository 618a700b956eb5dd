"""Models. Importing this package registers every model under its `name`."""

from recstack.models.base import Recommender, available_models, get_model_class
from recstack.models.blend import Blend
from recstack.models.bspm import BSPM, GFCF
from recstack.models.ease import EASE
from recstack.models.itemknn import ItemKNN
from recstack.models.lightgcn import LightGCN
from recstack.models.mf import MF
from recstack.models.multvae import MultVAE
from recstack.models.neumf import NeuMF
from recstack.models.neural import NeuralRecommender
from recstack.models.pop import MostPopular
from recstack.models.sequential import BERT4Rec, Caser, GRU4Rec, SASRec, SequentialRecommender
from recstack.models.two_tower import TwoTower
from recstack.models.youtube_dnn import YouTubeDNN

__all__ = [
    "Recommender", "NeuralRecommender", "available_models", "get_model_class",
    "MostPopular", "ItemKNN", "EASE", "BSPM", "GFCF", "Blend", "MF", "LightGCN", "NeuMF", "MultVAE", "TwoTower", "YouTubeDNN",
    "SequentialRecommender", "GRU4Rec", "Caser", "SASRec", "BERT4Rec",
]
