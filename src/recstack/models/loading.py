"""Loading any saved model: the directory's config.json names it, its class reads the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recstack.models.registry import model_class


def load_model(path: str | Path, device: str = "auto") -> Any:
    """The model saved in directory `path` (by any model's ``save``), on `device`.

    Raises:
        ValueError: no config.json there, or it names no registered model.
    """
    p = Path(path)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ValueError(f"{p}: not a saved model (no config.json)")
    try:
        name = json.loads(cfg.read_text())["model"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg}: not a model config ({e})") from None
    return model_class(name).load(p, device=device)
