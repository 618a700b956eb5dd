"""Models. Importing this package registers every model under its `name`."""

from recstack.models.base import Recommender, available_models, get_model_class
from recstack.models.ease import EASE
from recstack.models.itemknn import ItemKNN
from recstack.models.mf import MF
from recstack.models.pop import MostPopular

__all__ = ["Recommender", "available_models", "get_model_class", "MostPopular", "ItemKNN", "EASE", "MF"]
