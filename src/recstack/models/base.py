"""The estimator API every recstack model follows.

    model = EASE(l2=500.0).fit(train)          # hyper-parameters in the constructor, work in fit
    items, scores = model.recommend(users, k=10)
    model.save("out/ease"); EASE.load("out/ease")  # JSON config + safetensors, never pickle

Models work on encoded indices (0..n_users-1, 0..n_items-1); the dataset's vocabularies map raw
ids to indices and back.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from recstack import __version__
from recstack.configs.params import ParamSpec, check_values, param_specs
from recstack.data.dataset import Interactions, Vocab
from recstack.data.interop import InteractionsLike, as_interactions
from recstack.evaluation.ranking import resolve_device, topk
from recstack.files import save_safetensors


class Model:
    """The contract every recstack model follows, whatever its task.

    - Constructor arguments are the hyper-parameters (scikit-learn's convention): the signature
      is the typed config and holds the one default of each; nothing is computed in
      ``__init__``. Inherited parameters (training settings, a family's shared options) take
      the class's ``_defaults`` where a model wants other values than its base.
    - :meth:`param_specs` / :meth:`check_params` describe and validate them (type, range,
      choices) before any data is read; :meth:`get_params`, :meth:`set_params` and
      :meth:`clone` behave as in scikit-learn.
    - Learned state ends in ``_``; ``save(dir)`` / ``load(dir)`` write JSON + safetensors
      (never pickle).
    - What a model can do beyond that is declared by the protocols in
      :mod:`recstack.models.capabilities` (recommends top-k, encodes sequences, scores feature
      rows, exports item vectors), not probed with ``hasattr``.
    """

    name: ClassVar[str] = "base"
    #: "retrieval" | "sequential" | "ctr" (see recstack.models.registry.TASKS)
    task: ClassVar[str] = ""
    #: values for inherited hyper-parameters that differ from the base class's (merged along
    #: the class hierarchy, the subclass winning)
    _defaults: ClassVar[dict[str, Any]] = {}

    device: str

    # ---- hyper-parameters ------------------------------------------------------------------------
    @classmethod
    def _merged_defaults(cls) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("_defaults", {}))
        return out

    @classmethod
    def param_specs(cls) -> dict[str, ParamSpec]:
        """Every hyper-parameter of this model: name -> spec (type, default, range, choices)."""
        cached = cls.__dict__.get("_specs_cache")
        if cached is not None:
            return cached
        specs: dict[str, ParamSpec] = {}
        for klass in cls.__mro__:  # the subclass's own signature first
            init = klass.__dict__.get("__init__")
            if init is None or not issubclass(klass, Model):
                continue
            for key, spec in param_specs(init).items():
                specs.setdefault(key, spec)
            if "_extra_specs" in klass.__dict__:  # this class takes its **kwargs as these
                for key, spec in klass._extra_specs().items():
                    specs.setdefault(key, spec)
            # an __init__ with **kwargs hands the rest on to its base class's
            if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
                break
        overrides = cls._merged_defaults()
        specs = {k: (dataclasses.replace(v, default=overrides[k]) if k in overrides else v)
                 for k, v in specs.items()}
        cls._specs_cache = specs
        return specs

    @classmethod
    def _extra_specs(cls) -> dict[str, ParamSpec]:
        """Hyper-parameters passed through ``**kwargs`` (e.g. the training settings)."""
        return {}

    @classmethod
    def check_params(cls, params: Mapping[str, Any], where: str | Callable[[str], str] = "params"
                     ) -> dict[str, Any]:
        """`params` validated against :meth:`param_specs` and coerced (``"3e-4"`` -> 0.0003).

        Raises:
            ValueError: one line naming the key, then the valid keys, or its type and range.
        """
        label = where if callable(where) else (lambda key: where)
        return check_values(cls.param_specs(), params, cls.name, label)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters as set (plus ``device``): ``type(self)(**get_params())`` is a
        fresh copy."""
        return {k: getattr(self, k) for k in self.param_specs()} | {"device": self.device}

    def set_params(self, **params: Any) -> Model:
        """Change hyper-parameters (checked); returns self. A fitted model needs a new `fit`."""
        device = params.pop("device", None)
        for k, v in self.check_params(params).items():
            setattr(self, k, v)
        if device is not None:
            self.device = device
        return self

    def clone(self) -> Model:
        """A new, unfitted model with the same hyper-parameters (deep-copied values)."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def _validate_params(self) -> None:
        """Check the current hyper-parameters (called by `fit`, before any work)."""
        self.check_params({k: v for k, v in self.get_params().items() if k != "device"},
                          where=f"{self.name}")

    def __repr__(self) -> str:
        specs = self.param_specs()
        changed = {k: v for k, v in self.get_params().items()
                   if k != "device" and (k not in specs or v != specs[k].default)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


class Recommender(Model):
    """Base class of the retrieval and sequential models: subclasses set `name`, implement
    `_fit`, `score_all` and the state hooks.

    Users and items are raw ids at the public verbs (`recommend`, `score`), exactly as in the
    data the model was fitted on; `recommend_indices` / `score_indices` / `score_all` work on
    the encoded indices (0..n-1) for internal use (evaluation, the serving pipeline).
    """

    name: ClassVar[str] = "base"
    task: ClassVar[str] = "retrieval"

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    # ---- training ------------------------------------------------------------------------------
    def fit(self, data: InteractionsLike) -> Recommender:
        """Learn from `data`; its interactions become the 'seen' items excluded by `recommend`.

        `data`: Interactions, or anything :func:`recstack.data.as_interactions` takes (a scipy
        sparse users x items matrix: `recommend` then takes row and returns column indices; a
        pandas / polars DataFrame or Arrow table with ``user_id`` / ``item_id`` columns: raw ids).
        """
        data = as_interactions(data)
        self._validate_params()
        self._start_fit(data)
        self._fit(data)
        return self

    def _start_fit(self, data: Interactions) -> None:
        """What every fit records first: device, sizes, seen items, the id vocabularies."""
        self.device_ = resolve_device(self.device)
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self.seen_ = data.csr()
        self.user_vocab_, self.item_vocab_ = data.user_vocab, data.item_vocab

    def _fit(self, data: Interactions) -> None:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise RuntimeError(f"{self.name}: call fit() (or load()) before using the model")

    # ---- scoring -------------------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user in `users` -> float tensor [len(users), n_items]."""
        raise NotImplementedError

    # ---- raw ids <-> indices -------------------------------------------------------------------
    def user_index(self, users: Any) -> np.ndarray:
        """Raw user ids -> indices (int64); unknown ids raise ValueError naming them."""
        self._check_fitted()
        return self._encode(self.user_vocab_, users, "user")

    def item_index(self, items: Any) -> np.ndarray:
        """Raw item ids -> indices (int64); unknown ids raise ValueError naming them."""
        self._check_fitted()
        return self._encode(self.item_vocab_, items, "item")

    def item_ids(self, index: np.ndarray) -> np.ndarray:
        """Item indices -> raw item ids (-1 slots, where fewer than k items exist, stay -1)."""
        index = np.asarray(index)
        out = self.item_vocab_.decode(np.maximum(index, 0))
        if (index < 0).any():
            out = out.astype(object)
            out[index < 0] = None
        return out

    def _encode(self, vocab: Vocab, ids: Any, what: str) -> np.ndarray:
        values = np.atleast_1d(np.asarray(ids, dtype=object if isinstance(ids, str) else None))
        idx = vocab.encode(values, strict=False)
        if len(idx) and idx.min() < 0:
            bad = values[idx < 0][:5].tolist()
            raise ValueError(f"{self.name}: {int((idx < 0).sum())} unknown {what} id(s), e.g. {bad} "
                             f"(not in the data the model was fitted on)")
        return idx

    # ---- public verbs: raw ids ---------------------------------------------------------------
    def recommend(self, users: Any, k: int = 10, exclude_seen: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k raw item ids for each raw user id -> (items [n, k], scores float32 [n, k]).

        Ties are broken towards the lower item index (a stable order for serving). With
        `exclude_seen`, items the user interacted with in the training data are never returned.
        Unknown user ids raise ValueError. `recommend_indices` is the index-based variant.
        """
        items, scores = self.recommend_indices(self.user_index(users), k, exclude_seen)
        return self.item_ids(items), scores

    def score(self, users: Any, items: Any) -> np.ndarray:
        """Scores of aligned (raw user id, raw item id) pairs (float32)."""
        return self.score_indices(self.user_index(users), self.item_index(items))

    # ---- index-based variants (internal: evaluation, the serving pipeline) ----------------------
    @torch.no_grad()
    def score_indices(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of aligned (user index, item index) pairs."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.empty(len(users), np.float32)
        uniq, inv = np.unique(users, return_inverse=True)
        for s in range(0, len(uniq), self._batch_rows()):
            chunk = uniq[s : s + self._batch_rows()]
            sel = (inv >= s) & (inv < s + len(chunk))
            full = self.score_all(torch.as_tensor(chunk, device=self.device_))
            rows = torch.as_tensor(inv[sel] - s, device=self.device_)
            cols = torch.as_tensor(items[sel], device=self.device_)
            out[sel] = full[rows, cols].float().cpu().numpy()
        return out

    @torch.no_grad()
    def recommend_indices(
        self, users: np.ndarray | int, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices for each user index -> (items int64 [n, k], scores float32 [n, k]).

        Ties are broken towards the lower item index. With `exclude_seen`, items the user
        interacted with in the training data are never returned (slots beyond the items left
        hold -1 and score -inf).
        """
        self._check_fitted()
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        if users.size and (users.min() < 0 or users.max() >= self.n_users_):
            raise IndexError(f"{self.name}: user index out of range [0, {self.n_users_})")
        k = min(k, self.n_items_)
        items_out = np.empty((len(users), k), np.int64)
        scores_out = np.empty((len(users), k), np.float32)
        for s in range(0, len(users), self._batch_rows()):
            batch = users[s : s + self._batch_rows()]
            scores = self.score_all(torch.as_tensor(batch, device=self.device_)).float()
            if exclude_seen:
                scores = mask_rows(scores, self.seen_, batch)
            v, i = topk(scores, k)
            i = i.masked_fill(torch.isneginf(v), -1)
            items_out[s : s + len(batch)] = i.cpu().numpy()
            scores_out[s : s + len(batch)] = v.cpu().numpy()
        return items_out, scores_out

    def _batch_rows(self) -> int:
        # keep a users x items score block near 256 MB
        return max(1, (64 * 1024 * 1024) // max(1, self.n_items_))

    # ---- persistence (JSON + safetensors; never pickle) ------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (subclasses extend)."""
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `_state`."""

    def _meta(self) -> dict[str, Any]:
        """JSON-able facts learned in fit that loading needs besides the tensors (e.g. shapes)."""
        return {}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        """Inverse of `_meta`, called before `_load_state`."""

    def save(self, path: str | Path) -> Path:
        """Write `config.json` and `weights.safetensors` into directory `path`."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.get_params().items() if k != "device"}
        config = {
            "model": self.name,
            "params": params,
            "n_users": self.n_users_,
            "n_items": self.n_items_,
            "meta": self._meta(),
            "recstack_version": __version__,
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self._state().items()}
        seen = self.seen_.tocsr()
        state["seen.indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
        state["seen.indices"] = torch.from_numpy(seen.indices.astype(np.int64))
        save_safetensors(state, str(path / "weights.safetensors"))
        self.user_vocab_.save(path / "vocab.user.parquet")
        self.item_vocab_.save(path / "vocab.item.parquet")
        (path / "config.json").write_text(json.dumps(config, indent=2, default=_jsonable))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Recommender:
        """Load a model saved by `save`; the class is taken from config.json."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        model_cls = get_model_class(config["model"])
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a '{config['model']}' model, not {cls.name}")
        model = model_cls(**model_cls.check_params(config["params"], where=str(path / "config.json")),
                          device=device)
        model.device_ = resolve_device(device)
        model.n_users_, model.n_items_ = config["n_users"], config["n_items"]
        state = load_file(str(path / "weights.safetensors"))
        indptr = state.pop("seen.indptr").numpy()
        indices = state.pop("seen.indices").numpy()
        model.seen_ = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr), shape=(model.n_users_, model.n_items_)
        )
        model.user_vocab_ = Vocab.load(path / "vocab.user.parquet", "user")
        model.item_vocab_ = Vocab.load(path / "vocab.item.parquet", "item")
        model._restore_meta(config.get("meta", {}))
        model._load_state({k: v.to(model.device_) for k, v in state.items()})
        return model


def mask_rows(scores: torch.Tensor, matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Set scores[r, j] = -inf wherever matrix[rows[r], j] is nonzero (vectorised, in place)."""
    indptr = matrix.indptr
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    if lens.sum() == 0:
        return scores
    r = np.repeat(np.arange(len(rows)), lens)
    offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    c = matrix.indices[np.repeat(starts, lens) + offs]
    scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = float("-inf")
    return scores


def csr_rows_torch(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """The selected CSR rows as a torch sparse CSR tensor on `device` (for sparse @ dense)."""
    sub = matrix[rows]
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; the indices come from a valid scipy CSR
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.as_tensor(sub.indptr, dtype=torch.int64), torch.as_tensor(sub.indices, dtype=torch.int64),
            torch.as_tensor(sub.data, dtype=torch.float32), size=sub.shape,
        ).to(device)


def _jsonable(value: Any) -> Any:
    """JSON for hyper-parameter values json does not know (tuples are lists already)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to config.json")


def get_model_class(name: str) -> type[Model]:
    """The class of model `name` (any task; see `recstack.models.registry`)."""
    from recstack.models.registry import model_class

    return model_class(name)


def available_models() -> list[str]:
    """Names of every registered model (retrieval, sequential, ranking / CTR)."""
    from recstack.models.registry import model_names

    return model_names()


def model_hparams(model: Model) -> dict[str, Any]:
    """The hyper-parameters a training checkpoint records to refuse a resume with other ones:
    the model's own (the trainer records its `TrainConfig` fields itself), not the device."""
    import dataclasses

    from recstack.training.trainer import TrainConfig

    train = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in model.get_params().items() if k not in train and k != "device"}
