"""The experiment config: the one loader and checker behind `recstack train --config`, `--set`,
`recstack tune`, the quickstart and the Python API.

    cfg = load_experiment("sasrec", params={"epochs": 5})      # a shipped config, checked
    cfg = experiment_config({"model": "ease", "data": "embedded"}, "mine")
    run_experiment(cfg)

A config file has :class:`ExperimentConfig`'s fields as keys; a model's hyper-parameters go
under ``params`` and are checked against the model's own typed signature
(`Model.param_specs`: the one source of their defaults), so ``--model X`` and ``--config X``
give the same parameters. Every key and value is checked before any data is read; an error is
one line naming the file (or ``--set`` / the command line), the key, and the valid keys or the
expected type and range.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recstack.configs import ConfigError, path, read_file
from recstack.configs.params import ParamSpec, check_values, specs_from_dataclass

__all__ = ["CTRTaskOptions", "ExperimentConfig", "check_device", "check_model_params", "experiment_config",
           "load_experiment", "model_param_specs"]


@dataclass
class ExperimentConfig:
    """Everything `recstack train` needs; CLI flags map one-to-one onto these fields."""

    model: str
    data: str
    split: Literal["loo", "temporal", "ratio", "given"] | None = None
    device: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    ks: tuple[int, ...] = (5, 10, 20)
    protocol: str | None = None  # a named protocol; None = the data set's standard one
    exclude_seen: bool | None = None  # None = the protocol's default (history excluded)
    ties: Literal["random", "index"] = "random"  # tie rule of the ranking metrics
    tie_seed: int = 0
    implicit_threshold: float | None = None
    seed: int = 0
    out: str | None = None
    refit: bool = True  # neural models on a split without valid: retrain on all train data
    trec_out: str | None = None  # directory for run.trec + qrels.trec of the test users


@dataclass
class CTRTaskOptions:
    """Options of the CTR task a ranking model is trained on (`recstack train --set ...`)."""

    label_threshold: float = 4.0  # label = rating >= this
    history_len: int = 20  # recent items / recently clicked items per event
    min_freq: int | None = None  # rarer ids and values share the OOV code (None: 2; Criteo: 10)
    hash_buckets: int = 0  # criteo: hash categorical values into this many buckets (0 = vocabularies)
    max_rows: int | None = None  # criteo: read at most this many rows


TASK_OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CTRTaskOptions))


def model_param_specs(model: str) -> dict[str, ParamSpec]:
    """Every key ``params`` may hold for `model`: its hyper-parameters (and, for ranking
    models, the CTR task options)."""
    from recstack.models.registry import entry, model_class

    specs = dict(model_class(model).param_specs())
    if entry(model).task == "ctr":
        specs.update(specs_from_dataclass(CTRTaskOptions))
    return specs


def check_model_params(model: str, params: dict[str, Any], where: str | dict[str, str] = "params"
                       ) -> dict[str, Any]:
    """`params` checked against what `model` accepts, values coerced to their declared kinds.

    Args:
        where: the label errors start with (e.g. the file), or one label per key (a key's origin:
            the file or ``--set``); keys not in the dict get ``where["*"]``.

    Raises:
        ConfigError: naming the origin, ``params.<key>``, and what was expected.
    """
    label = (lambda k: where.get(k, where.get("*", "params"))) if isinstance(where, dict) else (lambda k: where)
    try:
        return check_values(model_param_specs(model), params, model, lambda k: f"{label(k)}: params")
    except ValueError as e:
        raise ConfigError(str(e).replace(": params: ", ": params.", 1)) from None


_FIELD_SPECS = specs_from_dataclass(ExperimentConfig)


def _check_field(name: str, value: Any) -> Any:
    """A top-level ExperimentConfig value, checked; raises ValueError with the problem."""
    if name == "model":
        from recstack.models.registry import entry

        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a model name, got {value!r}")
        return entry(value).name
    if name == "data":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a data spec such as embedded or lightgcn:DIR, got {value!r}")
        return value
    if name == "protocol" and value is not None:
        from recstack.evaluation.protocol import get_protocol

        return get_protocol(str(value)).name
    if name == "ks":
        ks = value if isinstance(value, list | tuple) else [value]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks):
            raise ValueError(f"expected a list of positive integers, got {value!r}")
        return tuple(ks)
    if name == "params":
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of hyper-parameters, got {value!r}")
        return dict(value)
    if name == "device":
        return check_device(value)
    v = _FIELD_SPECS[name].check(value)
    if name == "tie_seed" and v < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return v


def check_device(value: Any) -> str:
    """A device name (auto, cpu, cuda, cuda:N, ...) that this machine has, else ValueError in one
    line (``cuda`` without CUDA, ``cuda:3`` on a machine with two GPUs)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    value = value.strip()
    if value == "auto":
        return value
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{value} requested but CUDA is not available ({why}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{value} requested but this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{value} requested but MPS is not available; use --device cpu or auto")
    return value


def experiment_config(raw: dict[str, Any], where: str = "config", overrides: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None, check_model: bool = True) -> ExperimentConfig:
    """An `ExperimentConfig` from a mapping, every key and value checked.

    Precedence: `overrides` (top-level fields, e.g. command-line flags; None values ignored) over
    the mapping; `params` (e.g. ``--set``) merged key by key over the mapping's ``params``.
    Hyper-parameters not given keep the model's own defaults (its signature).

    Raises:
        ConfigError: the first unknown key or bad value, naming `where` (or ``--set``) and the key.
    """
    fields = [f.name for f in dataclasses.fields(ExperimentConfig)]
    raw = {k: v for k, v in raw.items() if k != "about"}  # a shipped config's registry entry
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            try:
                if not hint and "model" in raw and key in model_param_specs(str(raw["model"])):
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
        checked["params"] = check_model_params(checked["model"], {**file_params, **extra}, src)
    else:
        checked["params"] = {**file_params, **extra}
    return ExperimentConfig(**checked)


def load_experiment(file: str | Path, overrides: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None, check_model: bool = True) -> ExperimentConfig:
    """The `ExperimentConfig` of a config file (or a shipped config's name), checked; see
    `experiment_config` for `overrides` and `params`."""
    p = path(file)
    return experiment_config(read_file(p), str(p), overrides, params, check_model)
