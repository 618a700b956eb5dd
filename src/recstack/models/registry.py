"""The one model registry: every model by name, grouped by task, without importing any of them.

Listing models (`recstack models`) reads this table only, so it does not pay for importing
torch; :func:`model_class` imports a model's module when it is first asked for, and
:func:`create_model` builds one with its defaults and any overrides. A test checks that this
table and the model classes agree (names, tasks, modules).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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


_ENTRIES: tuple[ModelEntry, ...] = (
    # retrieval
    ModelEntry("pop", "retrieval", "recstack.models.pop", "MostPopular",
               "most interacted items first: the baseline every model must beat"),
    ModelEntry("itemknn", "retrieval", "recstack.models.itemknn", "ItemKNN",
               "item-based k-NN on cosine similarities with shrinkage (Sarwar et al. 2001)"),
    ModelEntry("ease", "retrieval", "recstack.models.ease", "EASE",
               "closed-form shallow autoencoder, item-item weights (Steck, WWW 2019)"),
    ModelEntry("gfcf", "retrieval", "recstack.models.bspm", "GFCF",
               "graph filter: linear + ideal low-pass item-item filter (Shen et al., CIKM 2021)"),
    ModelEntry("bspm", "retrieval", "recstack.models.bspm", "BSPM",
               "blurring-sharpening graph filter (Choi et al., SIGIR 2023)"),
    ModelEntry("blend", "retrieval", "recstack.models.blend", "Blend",
               "weighted blend of other models' standardised scores"),
    ModelEntry("mf", "retrieval", "recstack.models.mf", "MF",
               "matrix factorisation with BPR / BCE / sampled softmax / cosine contrastive loss"),
    ModelEntry("lightgcn", "retrieval", "recstack.models.lightgcn", "LightGCN",
               "MF embeddings propagated over the user-item graph (He et al., SIGIR 2020)"),
    ModelEntry("neumf", "retrieval", "recstack.models.neumf", "NeuMF",
               "GMF + MLP neural collaborative filtering (He et al., WWW 2017)"),
    ModelEntry("multvae", "retrieval", "recstack.models.multvae", "MultVAE",
               "variational autoencoder over the user's item set (Liang et al., WWW 2018)"),
    ModelEntry("two_tower", "retrieval", "recstack.models.two_tower", "TwoTower",
               "user and item towers over ids and features, in-batch / sampled softmax (Yi et al. 2019)"),
    ModelEntry("youtube_dnn", "retrieval", "recstack.models.youtube_dnn", "YouTubeDNN",
               "deep candidate generation from watch history (Covington et al., RecSys 2016)"),
    # sequential
    ModelEntry("gru4rec", "sequential", "recstack.models.sequential.gru4rec", "GRU4Rec",
               "GRU over the session's items (Hidasi et al., ICLR 2016)"),
    ModelEntry("caser", "sequential", "recstack.models.sequential.caser", "Caser",
               "convolutional sequence embedding (Tang & Wang, WSDM 2018)"),
    ModelEntry("sasrec", "sequential", "recstack.models.sequential.sasrec", "SASRec",
               "causal self-attention over the item sequence (Kang & McAuley, ICDM 2018)"),
    ModelEntry("bert4rec", "sequential", "recstack.models.sequential.bert4rec", "BERT4Rec",
               "bidirectional self-attention trained by the Cloze task (Sun et al., CIKM 2019)"),
    # ranking / CTR
    ModelEntry("lr", "ctr", "recstack.models.ctr.models.lr", "LR",
               "logistic regression on every feature (the CTR baseline)"),
    ModelEntry("fm", "ctr", "recstack.models.ctr.models.fm", "FM",
               "factorisation machine: pairwise feature interactions (Rendle, ICDM 2010)"),
    ModelEntry("wide_deep", "ctr", "recstack.models.ctr.models.wide_deep", "WideDeep",
               "wide linear part + deep MLP (Cheng et al., DLRS 2016)"),
    ModelEntry("deepfm", "ctr", "recstack.models.ctr.models.deepfm", "DeepFM",
               "FM and a DNN on shared embeddings (Guo et al., IJCAI 2017)"),
    ModelEntry("dcn", "ctr", "recstack.models.ctr.models.dcn", "DCN",
               "deep & cross network (Wang et al., ADKDD 2017)"),
    ModelEntry("dcnv2", "ctr", "recstack.models.ctr.models.dcnv2", "DCNv2",
               "DCN with full-rank cross layers (Wang et al., WWW 2021)"),
    ModelEntry("xdeepfm", "ctr", "recstack.models.ctr.models.xdeepfm", "XDeepFM",
               "compressed interaction network + DNN (Lian et al., KDD 2018)"),
    ModelEntry("autoint", "ctr", "recstack.models.ctr.models.autoint", "AutoInt",
               "self-attention over feature fields (Song et al., CIKM 2019)"),
    ModelEntry("dlrm", "ctr", "recstack.models.ctr.models.dlrm", "DLRM",
               "bottom MLP + pairwise dot interactions + top MLP (Naumov et al. 2019)"),
    ModelEntry("mmoe", "ctr", "recstack.models.ctr.models.mmoe", "MMoE",
               "multi-task mixture of experts (Ma et al., KDD 2018)"),
    ModelEntry("din", "ctr", "recstack.models.ctr.models.din", "DIN",
               "target attention over the user's history (Zhou et al., KDD 2018)"),
    ModelEntry("youtube_rank", "ctr", "recstack.models.ctr.models.youtube_rank", "YouTubeRank",
               "weighted logistic regression on watch time (Covington et al., RecSys 2016)"),
)
_BY_NAME = {e.name: e for e in _ENTRIES}


def _key(name: str) -> str:
    return str(name).lower().replace("-", "_")


def entries(task: str | None = None) -> list[ModelEntry]:
    """Registered models (of one task), in listing order."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return [e for e in _ENTRIES if task is None or e.task == task]


def model_names(task: str | None = None) -> list[str]:
    """Names of the registered models (of one task)."""
    return [e.name for e in entries(task)]


def entry(name: str) -> ModelEntry:
    """The registry entry of `name` (case-insensitive, '-' = '_').

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    e = _BY_NAME.get(_key(name)) or _BY_NAME.get(_key(name).replace("_", ""))
    if e is None:
        import difflib

        close = difflib.get_close_matches(_key(name), list(_BY_NAME), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown model '{name}'{hint}; available: {', '.join(_BY_NAME)}")
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
