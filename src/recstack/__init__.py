"""recstack: deep-learning recommender systems on PyTorch."""

__version__ = "0.1.0"
