"""Configuration files and typed hyper-parameters (the lowest layer: it imports no model).

- ``configs/models/<name>.yaml`` (one per model) and ``configs/pipeline.yaml`` (the serving
  stack's export recipe) ship inside the package, so they work after ``pip install``:

      from recstack import configs
      configs.names()                      # ['autoint', 'bert4rec', ..., 'youtube_rank']
      configs.path("sasrec")               # .../recstack/configs/models/sasrec.yaml

  A model config names the model and the data; it holds no hyper-parameter values: the model's
  signature is their one source (`recstack models --show NAME` prints them), and ``params:``
  in a file of your own overrides them. `recstack.workflow.config.load_experiment` reads and
  checks such a file.
- :mod:`recstack.configs.params`: typed hyper-parameters read from a model's signature
  (types, ranges, choices) and the checks every loader uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent
MODELS_DIR = CONFIG_DIR / "models"


class ConfigError(ValueError):
    """A config file (or an override) with an unknown key or a bad value."""


# ---- the shipped files ---------------------------------------------------------------------------
def names() -> list[str]:
    """Names of the shipped model configs (one per model)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def path(name: str | Path) -> Path:
    """The file of a shipped config (``"sasrec"``, ``"pipeline"``), or `name` itself when it is
    an existing file."""
    p = Path(name)
    if p.is_file():
        return p
    key = str(name).lower()
    if key == "pipeline":
        return CONFIG_DIR / "pipeline.yaml"
    candidate = MODELS_DIR / f"{key}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"{name}: no such file, and not a shipped config; shipped: "
                      f"{', '.join(names())}, pipeline")


def read_file(file: str | Path) -> dict[str, Any]:
    """A YAML or JSON file (by its suffix) as a mapping."""
    import yaml

    p = Path(file)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from e
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config must be a mapping of keys to values, got "
                          f"{type(raw).__name__}")
    return raw


__all__ = ["CONFIG_DIR", "ConfigError", "names", "path", "read_file"]
