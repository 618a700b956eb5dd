"""The one model registry: every model by name, grouped by task, without importing any of them.

A model is registered by its shipped config file (``configs/models/<name>.yaml``), whose
``about:`` mapping names its task, its class and a one-line summary, so adding a model touches
one model file and one config file. Listing models (`recstack models`) reads these small files
only, without importing torch; :func:`model_class` imports a model's module when it is first
asked for, and :func:`create_model` builds one with its defaults and any overrides. A test
checks that every entry's class exists and agrees (name, task).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["ModelEntry", "TASKS", "create_model", "entry", "model_class", "model_names", "entries"]

#: Tasks, in the order `recstack models` lists them.
TASKS: dict[str, str] = {
    "retrieval": "top-k recommendation from interactions (and features): users -> items",
    "sequential": "next item from the user's (or session's) items in time order",
    "ctr": "ranking / CTR: P(click) of feature rows, candidates scored with user and item features",
}


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: where it lives and what it is, in a line."""

    name: str
    task: str
    module: str
    cls: str
    summary: str


@lru_cache(maxsize=1)
def _entries() -> tuple[ModelEntry, ...]:
    """The entries of every shipped config, by task (in `TASKS` order), then name."""
    import yaml

    from recstack.configs import MODELS_DIR

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = []
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        raw = yaml.load(path.read_text(), Loader=loader) or {}
        about = raw.get("about")
        if not isinstance(about, dict) or not {"task", "class", "summary"} <= set(about):
            raise ValueError(f"{path}: a model config needs about: {{task, class, summary}}")
        if about["task"] not in TASKS:
            raise ValueError(f"{path}: about.task must be one of {', '.join(TASKS)}, got {about['task']!r}")
        module, _, cls = str(about["class"]).rpartition(".")
        out.append(ModelEntry(str(raw.get("model", path.stem)), about["task"], module, cls, str(about["summary"])))
    order = list(TASKS)
    return tuple(sorted(out, key=lambda e: (order.index(e.task), e.name)))




def _key(name: str) -> str:
    return str(name).lower().replace("-", "_")


def entries(task: str | None = None) -> list[ModelEntry]:
    """Registered models (of one task), in listing order."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return [e for e in _entries() if task is None or e.task == task]


def model_names(task: str | None = None) -> list[str]:
    """Names of the registered models (of one task)."""
    return [e.name for e in entries(task)]


def entry(name: str) -> ModelEntry:
    """The registry entry of `name` (case-insensitive, '-' = '_').

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    by_name = {e.name: e for e in _entries()}
    stripped = {n.replace("_", ""): e for n, e in by_name.items()}
    e = by_name.get(_key(name)) or stripped.get(_key(name).replace("_", ""))
    if e is None:
        import difflib

        close = difflib.get_close_matches(_key(name), list(by_name), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown model '{name}'{hint}; available: {', '.join(by_name)}")
    return e


def model_class(name: str) -> type:
    """The class of model `name` (imports its module on first use)."""
    e = entry(name)
    return getattr(importlib.import_module(e.module), e.cls)


def create_model(name: str, **params: Any) -> Any:
    """A new, unfitted model `name` with its defaults, overridden by `params` (checked: an
    unknown key or a bad value raises ValueError naming the valid keys, types and ranges)."""
    cls = model_class(name)
    device = params.pop("device", "auto")
    return cls(device=device, **cls.check_params(params))
