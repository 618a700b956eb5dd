"""The feature pipeline: a declared schema, fitted once, applied identically at training and at
serving time.

    pipe = FeaturePipeline(schema).fit(train_frame)     # or .fit(iter_of_chunks): streamed
    x = pipe.transform(frame)      # {"cat": [n, C], "num": [n, N], "bag.<name>": [n, L], ...}
    pipe.save("out/pipeline"); FeaturePipeline.load("out/pipeline")   # JSON + safetensors

`transform` is a pure function of the fitted state and the rows it is given: the same row gives
the same tensors whether it comes in a training frame of a million rows or in a serving request
of one (tests/test_features_pipeline.py checks it). Everything is vectorised with polars/numpy.

Output tensors (absent kinds give zero-width tensors, so every key is always there):

* ``cat``   int64  [n, C]  Categorical and Bucketized fields, in schema order
* ``num``   float32 [n, N] Numeric fields after their transforms
* ``bag.<name>`` int64 [n, L] one per MultiHot (left-aligned) / IdSequence (right-aligned)
* ``emb``   float32 [n, E] Precomputed vectors, concatenated
* ``cross`` int64  [n, X]  Cross fields (for wide parts)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors.numpy import load_file

from recstack.data.errors import DataError
from recstack.data.hashing import combine_codes, hash_bucket
from recstack.features.specs import (
    NUMERIC_TRANSFORMS,
    Bucketized,
    Categorical,
    Cross,
    FeatureSpec,
    IdSequence,
    MultiHot,
    Numeric,
    Precomputed,
    column_of,
    spec_from_json,
    spec_to_json,
)
from recstack.features.stats import Moments, standardize
from recstack.features.vocab import ValueCounts, Vocabulary
from recstack.files import save_safetensors

_VOCAB_KINDS = (Categorical, MultiHot, IdSequence)
_MAX_EXACT_CROSS = 10_000_000


# ---- what the pipeline produces ---------------------------------------------------------------
@dataclass
class BagLayout:
    """One padded bag of codes: its own vocabulary (`size` codes) or `shared_with` a field's."""

    name: str
    size: int
    max_len: int
    shared_with: str | None = None
    sequence: bool = False


@dataclass
class Layout:
    """Shapes and code ranges of the pipeline's output: all a model needs to build its tables."""

    cat_names: list[str] = field(default_factory=list)
    cat_sizes: list[int] = field(default_factory=list)
    bags: list[BagLayout] = field(default_factory=list)
    num_names: list[str] = field(default_factory=list)
    emb_dim: int = 0
    cross_names: list[str] = field(default_factory=list)
    cross_sizes: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        return cls(**{**d, "bags": [BagLayout(**b) for b in d["bags"]]})


# ---- column readers (vectorised; errors name the row and field) ---------------------------------
def _column(frame: pl.DataFrame, spec: FeatureSpec, where: str) -> pl.Series:
    col = column_of(spec)
    if col not in frame.columns:
        raise DataError(f"no column '{col}' (needed by feature '{spec.name}'); columns: "
                        f"{', '.join(frame.columns)}", path=where, field=col)
    return frame[col]


def _numbers(s: pl.Series, where: str, name: str) -> np.ndarray:
    """float64 values, NaN = missing; text that is not a number is an error naming its row."""
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        return s.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if s.dtype != pl.String:
        raise DataError(f"expected numbers, got column type {s.dtype}", path=where, field=name)
    text = s.str.strip_chars()
    x = text.cast(pl.Float64, strict=False)
    bad = np.flatnonzero((x.is_null() & text.is_not_null() & (text != "")).to_numpy())
    if len(bad):
        raise DataError(f"row {bad[0]}: {text[int(bad[0])]!r} is not a number "
                        f"({len(bad)} such rows)", path=where, field=name)
    return x.fill_null(float("nan")).to_numpy()


def _lists(s: pl.Series, spec: FeatureSpec, where: str) -> tuple[pl.Series, np.ndarray]:
    """(flat values, lengths [n]) of a list column, or of text split on the spec's separator."""
    sep = getattr(spec, "separator", None)
    if s.dtype == pl.String and sep is not None:
        s = s.str.split(sep).list.eval(pl.element().filter(pl.element() != ""))
    if not isinstance(s.dtype, pl.List | pl.Array):
        hint = " (set separator= to split text)" if s.dtype == pl.String else ""
        raise DataError(f"expected a list column, got {s.dtype}{hint}", path=where, field=spec.name)
    if isinstance(s.dtype, pl.Array):
        s = s.cast(pl.List(s.dtype.inner))
    arr = s.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    lens = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pl.Series(s.name, arr.flatten()), lens  # flatten skips null lists, honours slicing


def _pad(codes: np.ndarray, lens: np.ndarray, max_len: int, right: bool) -> np.ndarray:
    """Scatter flat per-row codes into [n, max_len]: the first max_len left-aligned, or the last
    max_len right-aligned (0 = padding)."""
    n = len(lens)
    out = np.zeros((n, max_len), np.int64)
    row = np.repeat(np.arange(n), lens)
    within = np.arange(len(codes)) - np.repeat(np.cumsum(lens) - lens, lens)
    if right:
        col = max_len - (np.repeat(lens, lens) - within)
        keep = col >= 0
    else:
        col, keep = within, within < max_len
    out[row[keep], col[keep]] = codes[keep]
    return out


def _apply_numeric(x: np.ndarray, transforms: Sequence[str], state: dict[str, float],
                   upto: int | None = None) -> np.ndarray:
    for t in transforms[:upto]:
        if t == "log":
            x = np.log1p(np.maximum(x, 0.0))
        elif t == "standardize":
            x = standardize(x, state["mean"], state["std"])
    return x


# ---- the pipeline ---------------------------------------------------------------------------------
class FeaturePipeline:
    """Fits vocabularies / statistics on training rows, then maps any rows to model tensors.

    Args:
        specs: the schema (see :mod:`recstack.features.specs`).
        sample_size: values kept (a seeded subsample) to fit bucket boundaries on streamed data.
        seed: seed of that subsample.
    """

    def __init__(self, specs: Sequence[FeatureSpec], sample_size: int = 1_000_000,
                 seed: int = 0) -> None:
        self.specs = list(specs)
        self.sample_size, self.seed = sample_size, seed
        self._check_specs()
        self.state_: dict[str, dict[str, Any]] | None = None
        self._vocab_cache: dict[str, Vocabulary] = {}

    def _check_specs(self) -> None:
        names = [s.name for s in self.specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate feature names: {sorted(dup)}")
        by_name = {s.name: s for s in self.specs}
        for s in self.specs:
            if isinstance(s, IdSequence) and s.vocab_of is not None:
                if not isinstance(by_name.get(s.vocab_of), Categorical):
                    raise ValueError(f"{s.name}: vocab_of='{s.vocab_of}' is not a Categorical feature")
            if isinstance(s, Cross):
                if len(s.fields) < 2:
                    raise ValueError(f"{s.name}: a cross needs at least two fields")
                for f in s.fields:
                    if not isinstance(by_name.get(f), Categorical | Bucketized):
                        raise ValueError(f"{s.name}: crossed field '{f}' is not a Categorical/Bucketized feature")
            if isinstance(s, Numeric):
                bad = [t for t in s.transforms if t not in NUMERIC_TRANSFORMS]
                if bad:
                    raise ValueError(f"{s.name}: unknown transforms {bad}; use {NUMERIC_TRANSFORMS}")
            if isinstance(s, Precomputed) and s.dim <= 0:
                raise ValueError(f"{s.name}: dim must be positive")
            if isinstance(s, Bucketized) and s.n_buckets < 2:
                raise ValueError(f"{s.name}: n_buckets must be >= 2")

    @property
    def fitted(self) -> bool:
        return self.state_ is not None

    def _needs_vocab(self, s: FeatureSpec) -> bool:
        return (isinstance(s, _VOCAB_KINDS) and not s.hash_buckets
                and getattr(s, "vocab_of", None) is None)

    # ---- fit ------------------------------------------------------------------------------------
    def fit(self, data: pl.DataFrame | Iterable[pl.DataFrame], where: str = "training frame"
            ) -> FeaturePipeline:
        """Fit on a frame, or on an iterable of frames (chunks: memory stays bounded by the
        vocabularies, never by the number of rows)."""
        frames = [data] if isinstance(data, pl.DataFrame) else data
        counts: dict[str, ValueCounts] = {}
        moments: dict[str, Moments] = {}
        samples: dict[str, list[np.ndarray]] = {}
        rng = np.random.default_rng(self.seed)
        n_rows = 0
        for frame in frames:
            n_rows += frame.height
            for s in self.specs:
                if self._needs_vocab(s):
                    col = _column(frame, s, where)
                    vals = _lists(col, s, where)[0] if isinstance(s, MultiHot | IdSequence) else col
                    counts.setdefault(s.name, ValueCounts()).add(vals)
                elif isinstance(s, Numeric) and "standardize" in s.transforms:
                    upto = list(s.transforms).index("standardize")
                    x = _apply_numeric(_numbers(_column(frame, s, where), where, s.name), s.transforms, {}, upto)
                    moments.setdefault(s.name, Moments()).add(x)
                elif isinstance(s, Bucketized):
                    x = _numbers(_column(frame, s, where), where, s.name)
                    x = x[np.isfinite(x)]
                    x = np.log1p(np.maximum(x, 0.0)) if s.log else x
                    keep = samples.setdefault(s.name, [])
                    keep.append(x)
                    if sum(len(a) for a in keep) > 2 * self.sample_size:  # bounded: subsample
                        allx = np.concatenate(keep)
                        samples[s.name] = [rng.choice(allx, self.sample_size, replace=False)]
        if n_rows == 0:
            raise DataError("cannot fit the feature pipeline on zero rows", path=where)
        self.state_ = {}
        for s in self.specs:
            st: dict[str, Any] = {}
            if isinstance(s, _VOCAB_KINDS) and s.hash_buckets:
                st["buckets"] = int(s.hash_buckets)
            elif self._needs_vocab(s):
                st["vocab"] = counts[s.name].vocabulary(s.min_freq, s.max_size).values
            elif isinstance(s, Numeric) and "standardize" in s.transforms:
                st.update(moments.get(s.name, Moments()).stats().to_json())
            elif isinstance(s, Bucketized):
                x = np.concatenate(samples.get(s.name, [np.zeros(0)]))
                qs = np.quantile(x, np.linspace(0, 1, s.n_buckets + 1)[1:-1]) if len(x) else np.zeros(0)
                st["boundaries"] = np.unique(qs)
            self.state_[s.name] = st
        self._vocab_cache.clear()
        return self

    # ---- sizes ----------------------------------------------------------------------------------
    def _size(self, s: FeatureSpec) -> int:
        """Number of codes of a categorical-like field (code 0 = missing/padding included)."""
        st = self.state_[s.name]
        if isinstance(s, Bucketized):
            return len(st["boundaries"]) + 2
        if isinstance(s, Cross):
            return self._cross_size(s)
        if getattr(s, "vocab_of", None):
            return self._size(self._spec(s.vocab_of))
        if "buckets" in st:
            return st["buckets"] + 1
        return self._vocabulary(s.name).size

    def _cross_size(self, s: Cross) -> int:
        if s.hash_buckets:
            return s.hash_buckets + 1
        prod = int(np.prod([self._size(self._spec(f)) for f in s.fields], dtype=np.float64))
        if prod > _MAX_EXACT_CROSS:
            raise ValueError(f"{s.name}: {prod:,} exact combinations; set hash_buckets")
        return prod + 1

    def _spec(self, name: str) -> FeatureSpec:
        return next(s for s in self.specs if s.name == name)

    def layout(self) -> Layout:
        """The output layout (shapes, code ranges) of the fitted pipeline."""
        self._check_fitted()
        lay = Layout()
        for s in self.specs:
            if isinstance(s, Categorical | Bucketized):
                lay.cat_names.append(s.name)
                lay.cat_sizes.append(self._size(s))
            elif isinstance(s, MultiHot | IdSequence):
                shared = getattr(s, "vocab_of", None)
                lay.bags.append(BagLayout(s.name, 0 if shared else self._size(s), s.max_len, shared,
                                          isinstance(s, IdSequence)))
            elif isinstance(s, Numeric):
                lay.num_names.append(s.name)
            elif isinstance(s, Precomputed):
                lay.emb_dim += s.dim
            elif isinstance(s, Cross):
                lay.cross_names.append(s.name)
                lay.cross_sizes.append(self._size(s))
        return lay

    def _check_fitted(self) -> None:
        if self.state_ is None:
            raise RuntimeError("feature pipeline: call fit() (or load()) first")

    # ---- transform ------------------------------------------------------------------------------
    def _vocabulary(self, name: str) -> Vocabulary:
        """The fitted vocabulary of field `name` (codes 0 missing, 1 out of vocabulary, 2..)."""
        if name not in self._vocab_cache:
            self._vocab_cache[name] = Vocabulary(self.state_[name]["vocab"])
        return self._vocab_cache[name]

    def _encode(self, values: pl.Series, s: FeatureSpec) -> np.ndarray:
        """Codes of raw values: 0 missing, 1 out of vocabulary, 2.. vocabulary (or hash buckets)."""
        owner = self._spec(s.vocab_of) if getattr(s, "vocab_of", None) else s
        st = self.state_[owner.name]
        if "buckets" in st:
            return hash_bucket(values, st["buckets"])
        return self._vocabulary(owner.name).encode(values)

    def transform(self, frame: pl.DataFrame, device: torch.device | str | None = None,
                  where: str = "frame") -> dict[str, torch.Tensor]:
        """Rows -> model tensors (see the module docstring); `where` names the source in errors."""
        self._check_fitted()
        n = frame.height
        cat: dict[str, np.ndarray] = {}
        num, emb, cross = [], [], []
        out: dict[str, np.ndarray] = {}
        for s in self.specs:
            if isinstance(s, Categorical):
                col = _column(frame, s, where)
                if isinstance(col.dtype, pl.List | pl.Array):
                    raise DataError("expected one value per row, got a list (use MultiHot)",
                                    path=where, field=s.name)
                cat[s.name] = self._encode(col, s)
            elif isinstance(s, Bucketized):
                x = _numbers(_column(frame, s, where), where, s.name)
                x = np.log1p(np.maximum(x, 0.0)) if s.log else x
                codes = 1 + np.searchsorted(self.state_[s.name]["boundaries"], x, side="right")
                cat[s.name] = np.where(np.isnan(x), 0, codes).astype(np.int64)
            elif isinstance(s, MultiHot | IdSequence):
                flat, lens = _lists(_column(frame, s, where), s, where)
                codes = self._encode(flat, s)
                if isinstance(s, MultiHot):
                    codes = codes.copy()
                    codes[codes == 0] = 1  # a null inside a bag is an unknown value, not padding
                out[f"bag.{s.name}"] = _pad(codes, lens, s.max_len, right=isinstance(s, IdSequence))
            elif isinstance(s, Numeric):
                x = _apply_numeric(_numbers(_column(frame, s, where), where, s.name), s.transforms,
                                   self.state_[s.name])
                num.append(np.where(np.isfinite(x), x, 0.0))
            elif isinstance(s, Precomputed):
                emb.append(self._vectors(_column(frame, s, where), s, where))
        for s in self.specs:
            if isinstance(s, Cross):
                cross.append(self._cross(s, cat))
        out["cat"] = np.stack(list(cat.values()), 1) if cat else np.zeros((n, 0), np.int64)
        out["num"] = np.stack(num, 1) if num else np.zeros((n, 0))
        out["emb"] = np.concatenate(emb, 1) if emb else np.zeros((n, 0))
        out["cross"] = np.stack(cross, 1) if cross else np.zeros((n, 0), np.int64)
        tensors = {}
        for k, v in out.items():
            t = torch.from_numpy(np.ascontiguousarray(v))
            t = t.float() if v.dtype.kind == "f" else t.long()
            tensors[k] = t.to(device) if device is not None else t
        return tensors

    def _vectors(self, s: pl.Series, spec: Precomputed, where: str) -> np.ndarray:
        flat, lens = _lists(s, spec, where)
        bad = np.flatnonzero((lens != spec.dim) & (lens != 0))
        if len(bad):
            raise DataError(f"row {bad[0]}: vector of length {lens[bad[0]]}, expected {spec.dim}",
                            path=where, field=spec.name)
        out = np.zeros((len(lens), spec.dim), np.float32)
        vals = flat.cast(pl.Float32).fill_null(0.0).to_numpy()
        out[lens == spec.dim] = vals.reshape(-1, spec.dim)
        return out

    def _cross(self, s: Cross, cat: dict[str, np.ndarray]) -> np.ndarray:
        cols = [cat[f] for f in s.fields]
        if s.hash_buckets:
            return combine_codes(cols, s.hash_buckets)
        code = np.zeros(len(cols[0]), np.int64)
        for f, c in zip(s.fields, cols, strict=True):  # mixed radix: exact, no collisions
            code = code * self._size(self._spec(f)) + c
        return code + 1

    def fit_transform(self, frame: pl.DataFrame, device: torch.device | str | None = None
                      ) -> dict[str, torch.Tensor]:
        return self.fit(frame).transform(frame, device)

    # ---- persistence (JSON + safetensors, never pickle) -----------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `pipeline.json` (schema, vocabularies, statistics) and `pipeline.safetensors`
        (bucket boundaries) into directory `path`."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays, fields = {}, []
        for s in self.specs:
            st = dict(self.state_[s.name])
            if "boundaries" in st:
                arrays[f"{s.name}.boundaries"] = np.asarray(st.pop("boundaries"), np.float64)
            fields.append({"spec": spec_to_json(s), "state": st})
        arrays["__format__"] = np.ones(1, np.int8)  # safetensors needs at least one tensor
        save_safetensors(arrays, str(path / "pipeline.safetensors"))
        meta = {"format": 1, "sample_size": self.sample_size, "seed": self.seed, "fields": fields}
        (path / "pipeline.json").write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeaturePipeline:
        """Inverse of `save`."""
        path = Path(path)
        meta = json.loads((path / "pipeline.json").read_text())
        arrays = load_file(str(path / "pipeline.safetensors"))
        pipe = cls([spec_from_json(f["spec"]) for f in meta["fields"]], meta["sample_size"], meta["seed"])
        pipe.state_ = {}
        for f in meta["fields"]:
            name = f["spec"]["name"]
            st = dict(f["state"])
            if f"{name}.boundaries" in arrays:
                st["boundaries"] = arrays[f"{name}.boundaries"]
            pipe.state_[name] = st
        return pipe
