"""Every model of recstack, behind one contract (`recstack.models.base.Model`) and one registry
(`recstack.models.registry`).

    from recstack.models import create_model, EASE
    model = create_model("ease", l2=200.0)          # any registered model by name, checked
    model = EASE(l2=200.0)                          # or its class

Names resolve lazily: importing this package does not import torch or any model until one is
used, so listing the registry (`recstack models`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from recstack.models.registry import create_model, entries, entry, model_class, model_names

_BASE = {
    "Model": "recstack.models.base", "Recommender": "recstack.models.base",
    "NeuralRecommender": "recstack.models.neural",
    "SequentialRecommender": "recstack.models.sequential.base",
    "CTRModel": "recstack.models.ctr.estimator",
    "load_model": "recstack.models.loading", "get_model_class": "recstack.models.base",
    "available_models": "recstack.models.base",
}


def __getattr__(name: str) -> Any:
    module = _BASE.get(name) or {e.cls: e.module for e in entries()}.get(name)
    if module is None:
        raise AttributeError(f"module 'recstack.models' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_BASE, *(e.cls for e in entries())])


__all__ = ["create_model", "entries", "entry", "model_class", "model_names", *sorted(_BASE)]
