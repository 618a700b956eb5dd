"""Configuration files: one YAML per model and the serving stack's export recipe.

The files live in the repository under ``configs/`` and ship inside the package (this
directory), so they work after ``pip install`` too:

    from recstack import configs
    configs.names()                      # ['autoint', 'bert4rec', ..., 'youtube_rank']
    configs.path("sasrec")               # .../recstack/configs/models/sasrec.yaml
    cfg = configs.load_experiment("sasrec", params={"epochs": 5})   # a checked ExperimentConfig
    configs.path("pipeline")             # the export recipe (`recstack export --recipe`)

A model config has `recstack.experiment.ExperimentConfig`'s fields as keys (``model``, ``data``,
``params``, ``split``, ``device``, ``ks``, ``seed``, ``out``, ...); hyper-parameters, training
settings and (for ranking models) CTR-task options go under ``params``. `load_experiment` checks
every key and value before anything is trained; an error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent
MODELS_DIR = CONFIG_DIR / "models"
SPLITS = ("loo", "temporal", "ratio", "given")


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


# ---- hyper-parameters a model accepts --------------------------------------------------------------
def _kinds(annotation: Any) -> set[str]:
    """Value kinds an annotation allows: int, float, bool, str, seq, none; empty = anything."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    out: set[str] = set()
    for part in text.split("|"):
        t = part.strip()
        if t in ("int", "float", "bool", "str"):
            out.add(t)
        elif t == "None":
            out.add("none")
        elif t.startswith(("tuple", "list", "Sequence")):
            out.add("seq")
        else:
            return set()  # dicts, Any, ...: not checked here
    return out


def model_params(model: str) -> dict[str, tuple[Any, set[str]]]:
    """Every key ``params`` may hold for `model` -> (default, allowed value kinds)."""
    from recstack.models.base import get_model_class
    from recstack.models.neural import NeuralRecommender
    from recstack.ranking.base import is_ranker, ranker_class
    from recstack.training.trainer import TrainConfig

    out: dict[str, tuple[Any, set[str]]] = {}
    train = {f.name: (f.default, _kinds(f.type)) for f in dataclasses.fields(TrainConfig)}
    if is_ranker(model):
        from recstack.ranking.experiment import TASK_OPTIONS

        cls = ranker_class(model).config_cls
        out.update({f.name: (f.default, _kinds(f.type)) for f in dataclasses.fields(cls)})
        out.update(train)
        task_kinds = {"label_threshold": {"float"}, "history_len": {"int"}, "min_freq": {"int"},
                      "hash_buckets": {"int"}, "max_rows": {"int", "none"}}
        out.update({k: (None, task_kinds.get(k, set())) for k in TASK_OPTIONS})
        return out
    cls = get_model_class(model)
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "device") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[p.name] = (p.default, _kinds(p.annotation))
    if issubclass(cls, NeuralRecommender):
        out.update(train)
    return out


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
               "seq": "a list", "none": "null"}


def _coerce(value: Any, kinds: set[str]) -> Any:
    """`value` as one of `kinds`, or raise ValueError. Text that reads as a number becomes one
    (YAML 1.1 reads ``3e-4`` as text); a single value where a list is expected becomes a list."""
    if not kinds:
        return value
    if value is None:
        if "none" in kinds:
            return None
    elif isinstance(value, bool):
        if "bool" in kinds:
            return value
    elif isinstance(value, int | float):
        if "int" in kinds and (isinstance(value, int) or float(value).is_integer()) and "float" not in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
        if "seq" in kinds:
            return [value]
    elif isinstance(value, str):
        if "str" in kinds:
            return value
        for kind, conv in (("int", int), ("float", float)):
            if kind in kinds:
                try:
                    return conv(value)
                except ValueError:
                    pass
        if "seq" in kinds:
            return [value]
    elif isinstance(value, list | tuple):
        if "seq" in kinds:
            return list(value)
    want = " or ".join(_KIND_WORDS[k] for k in sorted(kinds))
    raise ValueError(f"expected {want}, got {value!r}")


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_params(model: str, params: dict[str, Any], where: str | dict[str, str] = "params",
                 device: str = "cpu") -> dict[str, Any]:
    """`params` checked against what `model` accepts, with values coerced to the expected kinds;
    then the model is constructed (not trained) so its own checks run too.

    Args:
        where: the label errors start with (e.g. the file), or one label per key (a key's origin:
            the file or ``--set``); keys not in the dict get ``where.get("*")``.

    Raises:
        ConfigError: naming the origin and the key.
    """
    label = (lambda k: where.get(k, where.get("*", "params"))) if isinstance(where, dict) else (lambda k: where)  # noqa: E731
    accepted = model_params(model)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in accepted:
            valid = sorted(accepted)
            raise ConfigError(f"{label(key)}: params.{key}: unknown hyper-parameter of '{model}'"
                              f"{_suggest(key, valid)}; valid: {', '.join(valid)}")
        try:
            out[key] = _coerce(value, accepted[key][1])
        except ValueError as e:
            raise ConfigError(f"{label(key)}: params.{key}: {e}") from None
    _construct(model, out, device, label("*") if isinstance(where, dict) else where)
    return out


def _construct(model: str, params: dict[str, Any], device: str, where: str):
    """Build the model from `params` (the constructor's own checks), without training."""
    from recstack.ranking.base import is_ranker

    try:
        if is_ranker(model):
            from recstack.ranking.estimator import Ranker
            from recstack.ranking.experiment import TASK_OPTIONS

            return Ranker(model, features=[], device=device,
                          **{k: v for k, v in params.items() if k not in TASK_OPTIONS})
        from recstack.models.base import get_model_class

        return get_model_class(model)(device=device, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: params: {e}") from None


# ---- experiment configs ----------------------------------------------------------------------------
def all_models() -> list[str]:
    """Every model name: retrieval models, then ranking (CTR) models."""
    from recstack.models import available_models
    from recstack.ranking import ranker_names

    return available_models() + ranker_names()


def _check_field(name: str, value: Any) -> Any:
    """A top-level ExperimentConfig value, checked; raises ValueError with the problem."""
    if name in ("model", "data", "device"):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected text, got {value!r}")
        if name == "model":
            from recstack.ranking.base import is_ranker

            known = all_models()
            if value.lower() not in known and not is_ranker(value):
                raise ValueError(f"unknown model '{value}'{_suggest(value.lower(), known)}; "
                                 f"available: {', '.join(known)}")
        return value
    if name == "split":
        if value is not None and value not in SPLITS:
            raise ValueError(f"expected one of {', '.join(SPLITS)} or null, got {value!r}")
        return value
    if name == "params":
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of hyper-parameters, got {value!r}")
        return dict(value)
    if name == "ks":
        ks = value if isinstance(value, list | tuple) else [value]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks):
            raise ValueError(f"expected a list of positive integers, got {value!r}")
        return tuple(ks)
    if name in ("exclude_seen", "refit"):
        if value is None and name == "exclude_seen":
            return None
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if name == "implicit_threshold":
        return _coerce(value, {"float", "none"})
    if name in ("seed", "tie_seed"):
        return _coerce(value, {"int"})
    if name == "protocol":
        if value is None:
            return None
        from recstack.evaluation.protocol import get_protocol

        return get_protocol(str(value)).name
    if name == "ties":
        from recstack.evaluation.ranking import TIE_RULES

        if value not in TIE_RULES:
            raise ValueError(f"expected one of {', '.join(TIE_RULES)}, got {value!r}")
        return value
    if name == "out":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"expected a directory path, got {value!r}")
        return value
    return value


def experiment_config(raw: dict[str, Any], where: str = "config", overrides: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None, check_model: bool = True):
    """An `ExperimentConfig` from a mapping, every key and value checked.

    Precedence: `overrides` (top-level fields, e.g. command-line flags; None values ignored) over
    the mapping; `params` (e.g. ``--set``) merged key by key over the mapping's ``params``.

    Raises:
        ConfigError: the first unknown key or bad value, naming `where` (or ``--set``) and the key.
    """
    from recstack.experiment import ExperimentConfig

    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for key in raw:
        if key not in fields:
            hint = _suggest(str(key), fields)
            try:
                if not hint and "model" in raw and key in model_params(str(raw["model"])):
                    hint = f" ('{key}' is a hyper-parameter: put it under params:)"
            except ValueError:
                pass
            raise ConfigError(f"{where}: {key}: unknown key{hint}; valid keys: {', '.join(fields)}")
    merged = dict(raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
    origin = {k: ("command line" if (overrides or {}).get(k) is not None else where) for k in fields}
    missing = [k for k in ("model", "data") if merged.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}"
                          + (" (or give --model / --data)" if where != "config" else ""))
    checked: dict[str, Any] = {}
    for key, value in merged.items():
        try:
            checked[key] = _check_field(key, value)
        except ValueError as e:
            raise ConfigError(f"{origin[key]}: {key}: {e}") from None
    file_params = checked.get("params", {})
    extra = dict(params or {})
    if check_model:
        src = {k: "--set" for k in extra} | {"*": where}
        src.update({k: where for k in file_params if k not in extra})
        checked["params"] = check_params(checked["model"], {**file_params, **extra}, src)
    else:
        checked["params"] = {**file_params, **extra}
    return ExperimentConfig(**checked)


def load_experiment(file: str | Path, overrides: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None, check_model: bool = True):
    """The `ExperimentConfig` of a config file (or a shipped config's name), checked; see
    `experiment_config` for `overrides` and `params`."""
    p = path(file)
    return experiment_config(read_file(p), str(p), overrides, params, check_model)


__all__ = ["CONFIG_DIR", "ConfigError", "names", "path", "read_file", "model_params", "check_params",
           "experiment_config", "load_experiment", "all_models"]
