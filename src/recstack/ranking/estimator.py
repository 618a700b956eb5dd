"""The ranking estimator: feature pipeline + ranking model (+ the store of raw attributes).

    ranker = Ranker("deepfm", features=schema, store=store, dim=16, epochs=10)
    ranker.fit(train_frame, valid_frame)          # early stopping on valid AUC (shared Trainer)
    p = ranker.predict_proba(test_frame)          # P(label = 1) per row
    ranker.evaluate(test_frame)                   # {"auc": ..., "logloss": ...}
    ranker.score_candidates(user_id, item_ids)    # serving: one user x candidates, raw ids
    ranker.save("out/deepfm"); Ranker.load("out/deepfm")   # JSON + safetensors + Parquet

Keyword arguments are the model's config fields (see each model's ``XConfig``) and the
`TrainConfig` fields (epochs, lr, batch_size, ...).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from recstack import __version__
from recstack.data.errors import DataError
from recstack.evaluation.pointwise import auc, logloss
from recstack.evaluation.ranking import resolve_device
from recstack.features.pipeline import FeaturePipeline, Layout
from recstack.features.specs import FeatureSpec
from recstack.features.store import FeatureStore
from recstack.ranking.base import CTRModule, RankerConfig, ranker_class
from recstack.training.trainer import TrainConfig, Trainer, TrainResult

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# CTR defaults: a few passes over the data, early stopping on validation AUC
TRAIN_DEFAULTS: dict[str, Any] = dict(epochs=20, batch_size=1024, lr=1e-3, monitor="auc", patience=2,
                                      plateau_factor=1.0)


def _coerce(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """Values from JSON / YAML (`--set`) -> the dataclass field's type: lists -> tuples where the
    default is a tuple, text such as "3e-4" (YAML 1.1 reads it as a string) -> float or int."""
    out = dict(params)
    for f in dataclasses.fields(cls):
        if f.name not in out or f.default is dataclasses.MISSING:
            continue
        v, d = out[f.name], f.default
        if isinstance(d, tuple) and isinstance(v, list):
            out[f.name] = tuple(v)
        elif isinstance(d, tuple) and isinstance(v, int | float | str):
            out[f.name] = (v,)
        elif isinstance(d, float) and isinstance(v, str | int) and not isinstance(v, bool):
            try:
                out[f.name] = float(v)
            except ValueError:
                raise ValueError(f"{f.name}: expected a number, got {v!r}") from None
        elif isinstance(d, int) and not isinstance(d, bool) and isinstance(v, str):
            try:
                out[f.name] = int(v)
            except ValueError:
                raise ValueError(f"{f.name}: expected an integer, got {v!r}") from None
    return out


class Ranker:
    """Estimator for every ranking model (see the module docstring).

    Args:
        model: ranking model name (``ranker_names()``).
        features: the feature schema, or an already fitted `FeaturePipeline`.
        store: raw user/item attributes for `score_candidates` (optional).
        device: "auto", "cpu" or "cuda".
        eval_batch_size: rows per forward pass when predicting.
        **params: model config and TrainConfig fields.
    """

    def __init__(self, model: str = "deepfm", features: Sequence[FeatureSpec] | FeaturePipeline | None = None,
                 store: FeatureStore | None = None, device: str = "auto", eval_batch_size: int = 32768,
                 **params: Any) -> None:
        self.module_cls: type[CTRModule] = ranker_class(model)
        self.model = self.module_cls.name
        if features is None:
            raise ValueError(f"{self.model}: give the feature schema (features=[...]) or a fitted FeaturePipeline")
        self.pipeline = features if isinstance(features, FeaturePipeline) else FeaturePipeline(features)
        self.store, self.device, self.eval_batch_size = store, device, eval_batch_size
        cfg_fields = {f.name for f in dataclasses.fields(self.module_cls.config_cls)}
        unknown = set(params) - cfg_fields - _TRAIN_FIELDS
        if unknown:
            raise ValueError(f"{self.model}: unknown hyper-parameter(s) {sorted(unknown)}; model: "
                             f"{sorted(cfg_fields)}; training: {sorted(_TRAIN_FIELDS)}")
        cfg_kw = _coerce(self.module_cls.config_cls, {k: v for k, v in params.items() if k in cfg_fields})
        self.config: RankerConfig = self.module_cls.config_cls(**cfg_kw)
        train_kw = _coerce(TrainConfig, {k: v for k, v in params.items() if k in _TRAIN_FIELDS})
        self.train_config = TrainConfig(**{**TRAIN_DEFAULTS, **train_kw})

    # ---- parameters ------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Model config + training config, JSON-able."""
        return {"model": self.model, **dataclasses.asdict(self.config), **dataclasses.asdict(self.train_config)}

    def label_columns(self) -> tuple[str, ...]:
        """Label columns the model's objective reads (the first is the primary task)."""
        return tuple(getattr(self.config, "tasks", ()) or (self.config.label,))

    # ---- tensors ---------------------------------------------------------------------------------
    def examples(self, frame: pl.DataFrame, labels: bool = True, where: str = "frame") -> dict[str, torch.Tensor]:
        """Pipeline tensors of `frame` (+ "label" [n] or [n, tasks], + "weight") on the device."""
        ex = self.pipeline.transform(frame, where=where)
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
        self.layout_: Layout = self.pipeline.layout()
        self.module_: CTRModule = self.module_cls(self.layout_, self.config).to(self.device_)

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        p = self.config.id_dropout
        cols = [i for i, n in enumerate(self.layout_.cat_names) if n in self.config.id_dropout_fields]
        if p > 0 and cols:
            cat = batch["cat"].clone()
            sub = cat[:, cols]
            drop = torch.rand(sub.shape, generator=generator, device=sub.device) < p
            cat[:, cols] = torch.where(drop & (sub > 1), torch.ones_like(sub), sub)  # known -> OOV
            batch = {**batch, "cat": cat}
        return self.module_.loss(self.module_(batch), batch)

    def fit(self, train: pl.DataFrame, valid: pl.DataFrame | None = None) -> Ranker:
        """Fit the pipeline (unless already fitted) on `train`, then the model; with `valid`,
        early-stop on its AUC (`monitor`) and keep the best epoch's weights."""
        self.device_ = resolve_device(self.device)
        torch.manual_seed(self.train_config.seed)
        np.random.seed(self.train_config.seed)
        if not self.pipeline.fitted:
            self.pipeline.fit(train, where="training frame")
        self._build()
        ex = self.examples(train, where="training frame")
        validate = None
        if valid is not None and valid.height:
            vex = self.examples(valid, where="validation frame")

            def validate() -> dict[str, float]:
                return self._metrics(vex)

        self.train_result_: TrainResult = Trainer(self.train_config).fit(
            self.module_, self._loss, ex, validate, self.device_,
            make_optimizer=lambda module, cfg: module.make_optimizer(cfg))
        return self

    def partial_fit(self, frame: pl.DataFrame) -> Ranker:
        """One pass over `frame` (a chunk of a stream): the model and optimiser persist across
        calls, so a file larger than memory trains chunk by chunk. The pipeline must be fitted
        (e.g. on the first chunk, or hashed features with nothing to fit)."""
        if not hasattr(self, "optimizer_"):
            self.device_ = resolve_device(self.device)
            torch.manual_seed(self.train_config.seed)
            if not self.pipeline.fitted:
                raise RuntimeError("partial_fit: fit the feature pipeline first (pipeline.fit(chunk))")
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

    # ---- prediction ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise RuntimeError(f"{self.model}: call fit() (or load()) first")

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
        if self.store is None:
            raise RuntimeError(f"{self.model}: score_candidates needs a FeatureStore (store=...)")
        if by_index:
            user = self.store.users[self.store.user_key][int(user)]
            items = self.store.items[self.store.item_key].gather(np.asarray(items, np.int64)).to_numpy()
        return self.predict_proba(self.store.request(user, items, history, context))

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Directory with config.json, weights.safetensors, pipeline/ and store/ (never pickle)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"model": self.model, "config": dataclasses.asdict(self.config),
                  "train_config": dataclasses.asdict(self.train_config),
                  "layout": self.layout_.to_json(), "eval_batch_size": self.eval_batch_size,
                  "recstack_version": __version__}
        state = {k: v.detach().contiguous().cpu() for k, v in self.module_.state_dict().items()}
        save_file(state, str(path / "weights.safetensors"))
        self.pipeline.save(path / "pipeline")
        if self.store is not None:
            self.store.save(path / "store")
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Ranker:
        """Inverse of `save`."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        store = FeatureStore.load(path / "store") if (path / "store").exists() else None
        r = cls(config["model"], FeaturePipeline.load(path / "pipeline"), store, device,
                config.get("eval_batch_size", 32768), **config["config"], **config["train_config"])
        r.device_ = resolve_device(device)
        r.layout_ = Layout.from_json(config["layout"])
        r.module_ = r.module_cls(r.layout_, r.config).to(r.device_)
        r.module_.load_state_dict(load_file(str(path / "weights.safetensors"), device=str(r.device_)))
        r.module_.eval()
        return r


def fit_stream(ranker: Ranker, chunks: Iterable[pl.DataFrame]) -> Ranker:
    """`partial_fit` over every chunk of a stream (one pass)."""
    for chunk in chunks:
        ranker.partial_fit(chunk)
    return ranker
