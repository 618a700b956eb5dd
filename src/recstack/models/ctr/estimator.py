"""The estimator every ranking (CTR) model shares: feature pipeline + network (+ the store of
raw attributes), behind the one model contract (`recstack.models.base.Model`).

    model = create_model("deepfm", dim=16, epochs=10)          # or DeepFM(dim=16, epochs=10)
    model.fit(task)                       # a CTRTask (frames + schema + store), or
    model.fit(train_frame, valid_frame, features=schema, store=store)
    p = model.predict_proba(test_frame)   # P(label = 1) per row
    model.evaluate(test_frame)            # {"auc": ..., "logloss": ...}
    model.score_candidates(user_id, item_ids)   # serving: one user x candidates, raw ids
    model.recommend(user_ids, k=10)       # every item of the store scored, raw ids out
    model.save("out/deepfm"); load_model("out/deepfm")   # JSON + safetensors + Parquet

The hyper-parameters are the model's config dataclass fields (``XConfig``: the one source of
their defaults) and the `TrainConfig` fields (epochs, lr, batch_size, ...), whose per-model
values are the class's ``_defaults``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from recstack import __version__
from recstack.configs.params import ParamSpec, specs_from_dataclass
from recstack.data.errors import DataError
from recstack.evaluation.pointwise import auc, logloss
from recstack.evaluation.ranking import resolve_device
from recstack.features.pipeline import FeaturePipeline, Layout
from recstack.features.specs import FeatureSpec
from recstack.features.store import FeatureStore
from recstack.files import save_safetensors
from recstack.models.base import Model, model_hparams
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.fast_path import FastPathPlan
from recstack.training.trainer import TrainConfig, Trainer, TrainResult, TrainStep

log = logging.getLogger(__name__)
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class CTRModel(Model):
    """Base of every ranking (CTR) estimator; a subclass names its ``config_cls`` (the
    hyper-parameters) and ``net_cls`` (the network). See the module docstring."""

    task: ClassVar[str] = "ctr"
    config_cls: ClassVar[type[CTRConfig]] = CTRConfig
    net_cls: ClassVar[type[CTRModule]] = CTRModule
    # CTR training: a few passes over the data, early stopping on validation AUC
    _defaults: ClassVar[dict[str, Any]] = dict(epochs=20, batch_size=1024, lr=1e-3, monitor="auc", patience=2,
                                               plateau_factor=1.0)
    #: rows per forward pass when predicting (not a hyper-parameter: results do not depend on it)
    eval_batch_size: int = 32768

    def __init__(self, device: str = "auto", **params: Any) -> None:
        self.device = device
        cfg_fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = set(params) - cfg_fields - _TRAIN_FIELDS
        if unknown:
            raise ValueError(f"{self.name}: unknown hyper-parameter(s) {sorted(unknown)}; "
                             f"valid: {', '.join(sorted(self.param_specs()))}")
        defaults = self._merged_defaults()
        cfg_kw = {k: v for k, v in {**defaults, **params}.items() if k in cfg_fields}
        self.config: CTRConfig = self.config_cls(**_as_declared(self.config_cls, cfg_kw))
        train_kw = {k: v for k, v in {**defaults, **params}.items() if k in _TRAIN_FIELDS}
        self.train_config = TrainConfig(**train_kw)

    # ---- hyper-parameters: the config dataclass + the TrainConfig fields ---------------------------
    @classmethod
    def param_specs(cls) -> dict[str, ParamSpec]:
        cached = cls.__dict__.get("_specs_cache")
        if cached is not None:
            return cached
        defaults = cls._merged_defaults()
        specs = specs_from_dataclass(cls.config_cls, defaults) | specs_from_dataclass(TrainConfig, defaults)
        cls._specs_cache = specs
        return specs

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        values = dataclasses.asdict(self.config) | dataclasses.asdict(self.train_config)
        return {k: values[k] for k in self.param_specs()} | {"device": self.device}

    def set_params(self, **params: Any) -> CTRModel:
        device = params.pop("device", None)
        for k, v in self.check_params(params).items():
            if k in _TRAIN_FIELDS:
                setattr(self.train_config, k, v)
            else:
                setattr(self.config, k, _as_declared(self.config_cls, {k: v})[k])
        if device is not None:
            self.device = device
        return self

    def label_columns(self) -> tuple[str, ...]:
        """Label columns the model's objective reads (the first is the primary task)."""
        return tuple(getattr(self.config, "tasks", ()) or (self.config.label,))

    # ---- tensors ---------------------------------------------------------------------------------
    def examples(self, frame: pl.DataFrame, labels: bool = True, where: str = "frame") -> dict[str, torch.Tensor]:
        """Pipeline tensors of `frame` (+ "label" [n] or [n, tasks], + "weight") on the device."""
        ex = self.pipeline_.transform(frame, where=where)
        if labels:
            cols = []
            for c in self.label_columns():
                if c not in frame.columns:
                    raise DataError(f"no label column '{c}'", path=where, field=c)
                y = frame[c].cast(pl.Float32, strict=False)
                bad = np.flatnonzero((y.is_null() | ~y.is_in([0.0, 1.0])).to_numpy())
                if len(bad):
                    raise DataError(f"row {bad[0]}: label {frame[c][int(bad[0])]!r} is not 0/1",
                                    path=where, field=c)
                cols.append(y.to_numpy())
            y = np.stack(cols, 1) if len(cols) > 1 else cols[0]
            ex["label"] = torch.from_numpy(np.array(y, np.float32))
            wcol = getattr(self.config, "weight_column", None)
            if wcol is not None:
                if wcol not in frame.columns:
                    raise DataError(f"no weight column '{wcol}'", path=where, field=wcol)
                w = frame[wcol].cast(pl.Float32, strict=False).fill_null(1.0).to_numpy()
                ex["weight"] = torch.from_numpy(np.array(w, np.float32))
        return {k: v.to(self.device_) for k, v in ex.items()}

    # ---- training --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.layout_: Layout = self.pipeline_.layout()
        self.module_: CTRModule = self.net_cls(self.layout_, self.config).to(self.device_)

    def _drop_ids(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Training batches only: the `id_dropout` of the `id_dropout_fields`."""
        p = self.config.id_dropout
        cols = [i for i, n in enumerate(self.layout_.cat_names) if n in self.config.id_dropout_fields]
        if p > 0 and cols:
            cat = batch["cat"].clone()
            sub = cat[:, cols]
            drop = torch.rand(sub.shape, generator=generator, device=sub.device) < p
            cat[:, cols] = torch.where(drop & (sub > 1), torch.ones_like(sub), sub)  # known -> OOV
            batch = {**batch, "cat": cat}
        return batch

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        batch = self._drop_ids(batch, generator)
        return self.module_.loss(self.module_(batch), batch)

    def _train_step(self) -> tuple[TrainStep | None, FastPathPlan]:
        """The network's own fast training step when it has one that applies (DLRM's), and the
        plan saying so; ``(None, plan)`` -> the trainer's plain loop."""
        return None, FastPathPlan(False, reason=f"{self.name} has no fused training step (DLRM has)")

    def fit(self, train: Any, valid: pl.DataFrame | None = None, *,
            features: Sequence[FeatureSpec] | FeaturePipeline | None = None,
            store: FeatureStore | None = None) -> CTRModel:
        """Fit the feature pipeline (unless given fitted) on the training rows, then the network;
        with validation rows, early-stop on their AUC (`monitor`) and keep the best epoch.

        Args:
            train: a `CTRTask` (its train / valid frames, feature schema and store), or the
                training frame (then `features` is required).
            valid: validation frame (default: the task's).
            features: the feature schema, or an already fitted `FeaturePipeline`.
            store: raw user / item attributes, for `score_candidates` and `recommend`.
        """
        train, valid, features, store = _unpack(train, valid, features, store, self.name)
        self._validate_params()
        self.device_ = resolve_device(self.device)
        torch.manual_seed(self.train_config.seed)
        np.random.seed(self.train_config.seed)
        self.pipeline_ = features if isinstance(features, FeaturePipeline) else FeaturePipeline(features)
        self.store_ = store
        if not self.pipeline_.fitted:
            self.pipeline_.fit(train, where="training frame")
        self._build()
        self._record_seen(train)
        ex = self.examples(train, where="training frame")
        validate = None
        if valid is not None and valid.height:
            vex = self.examples(valid, where="validation frame")

            def validate() -> dict[str, float]:
                return self._metrics(vex)

        step, self.fast_path_ = self._train_step()
        if self.train_config.progress and self.fast_path_.used:
            log.info("%s: %s", self.name, self.fast_path_.describe())
        self.train_result_: TrainResult = Trainer(self.train_config, hparams=model_hparams(self)).fit(
            self.module_, self._loss, ex, validate, self.device_,
            make_optimizer=lambda module, cfg: module.make_optimizer(cfg), train_step=step)
        return self

    def partial_fit(self, frame: pl.DataFrame, features: FeaturePipeline | None = None,
                    store: FeatureStore | None = None) -> CTRModel:
        """One pass over `frame` (a chunk of a stream): the network and optimiser persist across
        calls, so a file larger than memory trains chunk by chunk. The first call needs a
        fitted `FeaturePipeline` (e.g. fitted on the first chunk, or hashed features)."""
        if not hasattr(self, "optimizer_"):
            if features is None or not isinstance(features, FeaturePipeline) or not features.fitted:
                raise ValueError(f"{self.name}: partial_fit: give a fitted FeaturePipeline on the first "
                                 "call (pipeline.fit(first_chunk))")
            self._validate_params()
            self.device_ = resolve_device(self.device)
            torch.manual_seed(self.train_config.seed)
            self.pipeline_, self.store_ = features, store
            self._build()
            self.optimizer_ = self.module_.make_optimizer(self.train_config)
            self.stream_gen_ = torch.Generator(device=self.device_).manual_seed(self.train_config.seed)
            self.stream_rows_ = 0
        ex = self.examples(frame, where="stream chunk")
        n, bs = frame.height, self.train_config.batch_size
        amp = self.train_config.amp and self.device_.type == "cuda"
        perm = torch.randperm(n, generator=self.stream_gen_, device=self.device_)
        self.module_.train()
        for s in range(0, n, bs):
            batch = {k: v[perm[s:s + bs]] for k, v in ex.items()}
            with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=amp):
                loss = self.module_.loss(self.module_(batch), batch)
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
        self.stream_rows_ += n
        self.module_.eval()
        return self

    def _record_seen(self, frame: pl.DataFrame) -> None:
        """The (user, item) pairs of the training rows, as store indices, for
        `recommend(exclude_seen=True)` (needs a store whose keys are columns of the frame)."""
        st = self.store_
        self.seen_ = None
        if st is None or st.users is None or st.items is None:
            return
        if st.user_key not in frame.columns or st.item_key not in frame.columns:
            return
        u = st.rows_of("user", frame[st.user_key])
        i = st.rows_of("item", frame[st.item_key])
        keep = (u >= 0) & (i >= 0)
        import scipy.sparse as sp

        self.seen_ = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (u[keep], i[keep])),
                                   shape=(st.users.height, st.items.height))
        self.seen_.sum_duplicates()

    # ---- prediction ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise RuntimeError(f"{self.name}: call fit() (or load()) first")

    @torch.no_grad()
    def logits(self, ex: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of examples (float32, [n] or [n, tasks]), in batches of `eval_batch_size`."""
        self._check_fitted()
        self.module_.eval()
        n = len(ex["cat"])
        amp = self.train_config.amp and self.device_.type == "cuda"
        out = []
        for s in range(0, n, self.eval_batch_size):
            batch = {k: v[s:s + self.eval_batch_size] for k, v in ex.items()}
            with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=amp):
                out.append(self.module_(batch).float())
        return torch.cat(out) if out else torch.zeros(0, device=self.device_)

    def predict_tasks(self, frame: pl.DataFrame) -> np.ndarray:
        """P(label = 1) of every task: [n] for one task, [n, tasks] for multi-task models."""
        return torch.sigmoid(self.logits(self.examples(frame, labels=False))).cpu().numpy()

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """P(primary label = 1) per row, float32 [n]."""
        p = self.predict_tasks(frame)
        return p[:, 0] if p.ndim == 2 else p

    def _metrics(self, ex: dict[str, torch.Tensor]) -> dict[str, float]:
        z = self.logits(ex)
        y = ex["label"]
        out: dict[str, float] = {}
        if z.ndim == 2:
            for k, task in enumerate(self.label_columns()):
                if k:
                    out[f"auc_{task}"] = auc(y[:, k], z[:, k])
            z, y = z[:, 0], y[:, 0]
        p = torch.sigmoid(z)
        out = {"auc": auc(y, z), "logloss": logloss(y, p), **out}
        return out

    def evaluate(self, frame: pl.DataFrame, where: str = "evaluation frame") -> dict[str, float]:
        """AUC and LogLoss of the primary task on `frame` (multi-task: AUC of the others too)."""
        self._check_fitted()
        t0 = time.perf_counter()
        out = self._metrics(self.examples(frame, where=where))
        return {**out, "rows": frame.height, "seconds": round(time.perf_counter() - t0, 3)}

    # ---- serving -----------------------------------------------------------------------------------
    def score_candidates(self, user: Any, items: Sequence[Any] | np.ndarray,
                         history: Sequence[Any] | None = None,
                         context: dict[str, Any] | None = None, by_index: bool = False) -> np.ndarray:
        """P(click) of each candidate item for one user, from raw ids through the fitted pipeline.

        Args:
            user: raw user id (or its index in the store's users table with `by_index`).
            items: raw item ids (or indices with `by_index`).
            history: the user's recent items (raw ids, oldest first); default: the stored one.
            context: request-level values (columns of the schema), broadcast to every candidate.
        """
        self._check_fitted()
        st = self._need_store("score_candidates")
        if by_index:
            user = st.users[st.user_key][int(user)]
            items = st.items[st.item_key].gather(np.asarray(items, np.int64)).to_numpy()
        return self.predict_proba(st.request(user, items, history, context))

    def recommend(self, users: Any, k: int = 10, exclude_seen: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k raw item ids of the store's catalogue for each raw user id, by P(click):
        every item is scored (a CTR model is a full recommender for catalogues of moderate
        size). With `exclude_seen`, the user's (user, item) pairs of the training rows are never
        returned. -> (items [n, k] (None where fewer are left), P(click) float32 [n, k])."""
        self._check_fitted()
        st = self._need_store("recommend")
        user_ids = np.atleast_1d(np.asarray(users, dtype=object))
        rows = st.rows_of("user", user_ids)
        if len(rows) and rows.min() < 0:
            bad = user_ids[rows < 0][:5].tolist()
            raise ValueError(f"{self.name}: {int((rows < 0).sum())} unknown user id(s), e.g. {bad}")
        all_items = st.items[st.item_key].to_numpy()
        k = min(int(k), len(all_items))
        out_items = np.empty((len(user_ids), k), dtype=object)
        out_scores = np.full((len(user_ids), k), -np.inf, np.float32)
        for r, (u, row) in enumerate(zip(user_ids.tolist(), rows.tolist(), strict=True)):
            p = self.score_candidates(u, all_items).astype(np.float32)
            if exclude_seen and self.seen_ is not None:
                p[self.seen_.indices[self.seen_.indptr[row]:self.seen_.indptr[row + 1]]] = -np.inf
            order = np.argsort(-p, kind="stable")[:k]  # ties: lower store index first
            ok = np.isfinite(p[order])
            out_items[r, : int(ok.sum())] = all_items[order[ok]]
            out_items[r, int(ok.sum()):] = None
            out_scores[r] = p[order]
        return out_items, out_scores

    def _need_store(self, verb: str) -> FeatureStore:
        if self.store_ is None:
            raise RuntimeError(f"{self.name}: {verb} needs the FeatureStore of raw attributes: fit with "
                               "store=... (a CTRTask carries one)")
        return self.store_

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Directory with config.json, weights.safetensors, pipeline/, store/ and seen.safetensors
        (never pickle)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()
                  if k != "device"}
        config = {"model": self.name, "params": params, "layout": self.layout_.to_json(),
                  "recstack_version": __version__}
        state = {k: v.detach().contiguous().cpu() for k, v in self.module_.state_dict().items()}
        save_safetensors(state, str(path / "weights.safetensors"))
        self.pipeline_.save(path / "pipeline")
        if self.store_ is not None:
            self.store_.save(path / "store")
        if getattr(self, "seen_", None) is not None:
            seen = self.seen_.tocsr()
            save_safetensors({"indptr": torch.from_numpy(seen.indptr.astype(np.int64)),
                       "indices": torch.from_numpy(seen.indices.astype(np.int64)),
                       "shape": torch.tensor(seen.shape, dtype=torch.int64)}, str(path / "seen.safetensors"))
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> CTRModel:
        """Inverse of `save` (`CTRModel.load` reads any ranking model; a subclass only its own)."""
        from recstack.models.registry import model_class

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        if "params" not in config:  # saved before 2026-12: model config and training config apart
            config["params"] = {**config.get("config", {}), **config.get("train_config", {})}
        model_cls = model_class(config["model"])
        if cls is not CTRModel and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a '{config['model']}' model, not {cls.name}")
        r = model_cls(device=device, **model_cls.check_params(config["params"], where=str(path / "config.json")))
        r.device_ = resolve_device(device)
        r.pipeline_ = FeaturePipeline.load(path / "pipeline")
        r.store_ = FeatureStore.load(path / "store") if (path / "store").exists() else None
        r.seen_ = None
        if (path / "seen.safetensors").exists():
            import scipy.sparse as sp

            t = load_file(str(path / "seen.safetensors"))
            shape = tuple(int(x) for x in t["shape"].tolist())
            indices = t["indices"].numpy()
            r.seen_ = sp.csr_matrix((np.ones(len(indices), np.float32), indices, t["indptr"].numpy()), shape=shape)
        r.layout_ = Layout.from_json(config["layout"])
        r.module_ = r.net_cls(r.layout_, r.config).to(r.device_)
        r.module_.load_state_dict(load_file(str(path / "weights.safetensors"), device=str(r.device_)))
        r.module_.eval()
        return r


def _as_declared(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Values from JSON / YAML as the dataclass declares them: lists -> tuples where the default
    is a tuple (the networks index them), a single value -> a one-element tuple."""
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(f.default, tuple):
            v = out[f.name]
            out[f.name] = tuple(v) if isinstance(v, list | tuple) else (v,)
    return out


def _unpack(train: Any, valid: Any, features: Any, store: Any, name: str) -> tuple:
    """(train frame, valid frame, features, store) from a CTRTask or loose arguments."""
    if hasattr(train, "train") and hasattr(train, "features") and not isinstance(train, pl.DataFrame):
        task = train
        return (task.train, task.valid if valid is None else valid,
                task.features if features is None else features, task.store if store is None else store)
    if not isinstance(train, pl.DataFrame):
        raise TypeError(f"{name}: fit expects a CTRTask or a polars DataFrame, got {type(train).__name__}")
    if features is None:
        raise ValueError(f"{name}: give the feature schema (features=[...]) or a fitted FeaturePipeline")
    return train, valid, features, store


def fit_stream(model: CTRModel, chunks: Iterable[pl.DataFrame], features: FeaturePipeline,
               store: FeatureStore | None = None) -> CTRModel:
    """`partial_fit` over every chunk of a stream (one pass)."""
    for chunk in chunks:
        model.partial_fit(chunk, features, store)
    return model
