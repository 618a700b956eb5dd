"""Typed hyper-parameters: what a model accepts, read from the model's own signature.

A model's constructor is its typed config (scikit-learn's convention): each keyword argument is
a hyper-parameter, its annotation the type, its default the one and only default. Values are
constrained by the annotation itself:

    def __init__(self, k: Annotated[int, Range(ge=1)] = 200,
                 loss: Literal["bpr", "softmax"] = "softmax", ...): ...

and, for the names every model family shares (``dim``, ``lr``, ``epochs``, ...), by
:data:`COMMON_RANGES`. :func:`param_specs` turns a signature into :class:`ParamSpec`s;
:meth:`ParamSpec.check` coerces a value read from YAML, JSON or ``--set key=value`` (``"3e-4"``
-> 0.0003, a single value where a list is expected -> a one-element list) or raises a one-line
error that names the key, the expected type and the range.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

__all__ = ["COMMON_RANGES", "ParamSpec", "Range", "check_values", "param_specs", "specs_from_dataclass"]


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge <= x``, ``gt < x``, ``x <= le``, ``x < lt`` (None = open)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def ok(self, x: float) -> bool:
        return ((self.ge is None or x >= self.ge) and (self.gt is None or x > self.gt)
                and (self.le is None or x <= self.le) and (self.lt is None or x < self.lt))

    def __str__(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        return " and ".join(parts)


#: Ranges of the hyper-parameter names that recur across models (a model's own Annotated
#: range wins). Keys not listed are type-checked only.
COMMON_RANGES: dict[str, Range] = {
    "dim": Range(ge=1), "id_dim": Range(ge=0), "hidden": Range(ge=1), "latent": Range(ge=1),
    "n_layers": Range(ge=0), "n_heads": Range(ge=1), "max_len": Range(ge=1),
    "n_negatives": Range(ge=1), "k": Range(ge=1), "rank": Range(ge=0), "top_k": Range(ge=1),
    "lr": Range(ge=0), "embedding_lr": Range(gt=0), "weight_decay": Range(ge=0),
    "dropout": Range(ge=0, lt=1), "attn_dropout": Range(ge=0, lt=1), "id_dropout": Range(ge=0, lt=1),
    "epochs": Range(ge=0), "batch_size": Range(ge=1), "patience": Range(ge=0), "eval_every": Range(ge=1),
    "grad_clip": Range(ge=0), "plateau_factor": Range(gt=0, le=1), "plateau_patience": Range(ge=0),
    "temperature": Range(gt=0), "init_std": Range(ge=0), "l2": Range(ge=0), "reg": Range(ge=0), "shrink": Range(ge=0),
    "max_items": Range(ge=1), "power_iters": Range(ge=1), "block": Range(ge=1), "seed": Range(ge=0),
    # graph filters (BSPM, GF-CF)
    "beta": Range(ge=0), "blur_time": Range(ge=0), "blur_steps": Range(ge=1), "sharpen_time": Range(ge=0),
    "sharpen_steps": Range(ge=1),
    # losses and their schedules
    "margin": Range(ge=-1, le=1), "neg_weight": Range(ge=0), "anneal_cap": Range(ge=0, le=1),
    "anneal_step": Range(ge=0), "alpha": Range(ge=0, le=1), "finetune_lr": Range(ge=0),
    "mask_prob": Range(gt=0, le=1), "last_item_prob": Range(ge=0, le=1),
    # architecture sizes
    "feature_dim": Range(ge=1), "history_dim": Range(ge=1), "max_history": Range(ge=1),
    "examples_per_user": Range(ge=1), "n_blocks": Range(ge=0), "c": Range(ge=1), "window": Range(ge=1),
    "ffn_mult": Range(ge=1),
    "n_h": Range(ge=0), "n_v": Range(ge=0), "layers": Range(ge=1), "heads": Range(ge=1), "att_dim": Range(ge=1),
    "cross_layers": Range(ge=1), "experts": Range(ge=1),
    # wide part of Wide & Deep (FTRL)
    "wide_lr": Range(gt=0), "wide_l1": Range(ge=0), "wide_l2": Range(ge=0),
    # CTR task options (recstack.workflow.config.CTRTaskOptions); a threshold may be any finite number
    "label_threshold": Range(gt=-math.inf, lt=math.inf), "history_len": Range(ge=1), "min_freq": Range(ge=1),
    "hash_buckets": Range(ge=0), "max_rows": Range(ge=1),
}

_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
               "seq": "a list", "none": "null", "map": "a mapping"}
_PLURAL = {"int": "integers", "float": "numbers", "bool": "booleans", "str": "texts", "none": "nulls"}


@dataclass(frozen=True)
class ParamSpec:
    """One hyper-parameter: its name, the kinds of value it takes, its default, constraints."""

    name: str
    kinds: frozenset[str]  # int, float, bool, str, seq, map, none; empty = not checked
    default: Any
    choices: tuple[Any, ...] | None = None
    range: Range | None = None
    item_kinds: frozenset[str] = frozenset()  # for seq: the kinds of its elements

    def describe(self) -> str:
        """``name: type [range | one of ...] (default ...)``: one line, for errors and listings."""
        if self.choices is not None:
            typ = "one of " + ", ".join(map(str, self.choices))
        elif self.kinds:
            typ = " or ".join(_KIND_WORDS[k] for k in sorted(self.kinds))
            if self.item_kinds and "seq" in self.kinds:
                typ += " of " + " or ".join(_PLURAL.get(k, k) for k in sorted(self.item_kinds))
        else:
            typ = "any value"
        rng = f" {self.range}" if self.range else ""
        return f"{self.name}: {typ}{rng} (default {self.default!r})"

    def check(self, value: Any) -> Any:
        """`value` coerced to this parameter's kind, or ValueError with the reason."""
        v = _coerce(value, self.kinds)
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{self.name}: expected one of {', '.join(map(repr, self.choices))}, got {value!r}")
        nums = [v] if isinstance(v, int | float) and not isinstance(v, bool) else []
        if isinstance(v, list | tuple) and self.range is not None:
            nums = [x for x in v if isinstance(x, int | float) and not isinstance(x, bool)]
        if isinstance(v, list | tuple) and self.item_kinds:
            v = type(v)(_coerce(x, self.item_kinds) for x in v)
        for x in nums:
            if isinstance(x, float) and math.isnan(x):
                raise ValueError(f"{self.name}: NaN is not a valid value")
            if self.range is not None and not self.range.ok(x):
                raise ValueError(f"{self.name}: expected a value {self.range}, got {value!r}")
        return v


def _coerce(value: Any, kinds: frozenset[str]) -> Any:
    if not kinds:
        return value
    if value is None:
        if "none" in kinds:
            return None
    elif isinstance(value, bool):
        if "bool" in kinds:
            return value
    elif isinstance(value, int | float):
        if "int" in kinds and float(value).is_integer() and ("float" not in kinds or isinstance(value, int)):
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
    elif isinstance(value, Mapping):
        if "map" in kinds:
            return dict(value)
    want = " or ".join(_KIND_WORDS[k] for k in sorted(kinds))
    raise ValueError(f"expected {want}, got {value!r}")


def _kinds_of(tp: Any) -> tuple[frozenset[str], tuple[Any, ...] | None, Range | None, frozenset[str]]:
    """(kinds, choices, range, item kinds) of a resolved annotation."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        kinds, choices, rng, items = _kinds_of(base)
        for m in meta:
            if isinstance(m, Range):
                rng = m
        return kinds, choices, rng, items
    if origin is Literal:
        values = typing.get_args(tp)
        kinds = frozenset({"none" if v is None else ("bool" if isinstance(v, bool) else type(v).__name__)
                           for v in values})
        return kinds, tuple(values), None, frozenset()
    if origin in (Union, types.UnionType):
        kinds: set[str] = set()
        choices: list[Any] | None = []
        rng = None
        items: set[str] = set()
        for a in typing.get_args(tp):
            k, c, r, i = _kinds_of(a)
            if not k:
                return frozenset(), None, None, frozenset()
            kinds |= k
            items |= i
            rng = rng or r
            if choices is not None:
                if c is None and k != {"none"}:
                    choices = None
                else:
                    choices.extend(c if c is not None else [None])
        return frozenset(kinds), (tuple(choices) if choices else None), rng, frozenset(items)
    if tp is type(None) or tp is None:
        return frozenset({"none"}), None, None, frozenset()
    if tp in (int, float, bool, str):
        return frozenset({tp.__name__}), None, None, frozenset()
    if origin in (tuple, list) or tp in (tuple, list) or origin in (Iterable, typing.Sequence) or \
            (origin is not None and getattr(origin, "__name__", "") == "Sequence"):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items: set[str] = set()
        for a in args:
            k, _, _, _ = _kinds_of(a)
            items |= k
        return frozenset({"seq"}), None, None, frozenset(items)
    if origin in (dict, Mapping) or tp in (dict,) or (origin is not None and getattr(origin, "__name__", "") == "Mapping"):
        return frozenset({"map"}), None, None, frozenset()
    return frozenset(), None, None, frozenset()


def _spec(name: str, annotation: Any, default: Any) -> ParamSpec:
    kinds, choices, rng, items = _kinds_of(annotation)
    if rng is None:
        rng = COMMON_RANGES.get(name)
    return ParamSpec(name, kinds, default, choices, rng, items)


def param_specs(fn: Callable[..., Any], skip: Iterable[str] = ("self", "device")) -> dict[str, ParamSpec]:
    """Specs of the keyword parameters of `fn` (a constructor), annotations resolved."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: type-check nothing for it
        hints = {}
    out: dict[str, ParamSpec] = {}
    skip = set(skip)
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        out[p.name] = _spec(p.name, hints.get(p.name, Any), default)
    return out


def specs_from_dataclass(cls: type, defaults: Mapping[str, Any] | None = None) -> dict[str, ParamSpec]:
    """Specs of a dataclass's fields (e.g. `TrainConfig`), with `defaults` overriding its own."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = defaults or {}
    out = {}
    for f in dataclasses.fields(cls):
        d = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        out[f.name] = _spec(f.name, hints.get(f.name, Any), d)
    return out


def check_values(specs: Mapping[str, ParamSpec], params: Mapping[str, Any], owner: str,
                 where: Callable[[str], str] = lambda key: "params") -> dict[str, Any]:
    """`params` checked against `specs`: coerced values, or ValueError naming the key's origin
    (`where(key)`), the key, and the valid keys or the expected type and range."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in specs:
            import difflib

            close = difflib.get_close_matches(key, list(specs), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{where(key)}: {key}: unknown hyper-parameter of '{owner}'{hint}; "
                             f"valid: {', '.join(sorted(specs))}")
        try:
            out[key] = specs[key].check(value)
        except ValueError as e:
            raise ValueError(f"{where(key)}: {key}: {_strip(str(e), key)} "
                             f"[{specs[key].describe()}]") from None
    return out


def _strip(msg: str, key: str) -> str:
    return msg[len(key) + 2:] if msg.startswith(f"{key}: ") else msg
