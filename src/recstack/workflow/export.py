"""`recstack export`: train the serving stack on a data set and write a bundle.

The recipe is data (`ExportRecipe`, loadable from JSON / YAML): which data, the models'
hyper-parameters, the index and the pipeline. With `holdout`, models are fitted on the
leave-one-out history only (train + valid), so the held-out items can evaluate the bundle.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from recstack.data.dataset import Interactions
from recstack.data.readers import load
from recstack.data.transforms import split, to_implicit
from recstack.index.config import IndexConfig
from recstack.index.embeddings import item_vectors
from recstack.index.factory import build_index
from recstack.models import EASE, ItemKNN, TwoTower
from recstack.pipeline.catalog import ItemCatalog, UserStore
from recstack.pipeline.config import PipelineConfig
from recstack.pipeline.matrices import dense_top_k, transition_matrix
from recstack.serving.bundle import write_bundle
from recstack.workflow.experiment import standard_protocol
from recstack.workflow.output import normal_modes

_log = logging.getLogger(__name__)

_SOURCES = [
    {"name": "two_tower", "kind": "ann", "model": "two_tower", "index": "two_tower", "n": 200},
    {"name": "item2item", "kind": "item2item", "matrix": "itemknn", "n": 200, "last_n": 20, "decay": 0.9},
    {"name": "sequential", "kind": "sequential", "matrix": "transitions", "n": 100, "last_n": 3, "decay": 0.5},
    {"name": "popular", "kind": "popular", "n": 50, "weight": 0.5},
    {"name": "fresh", "kind": "fresh", "n": 20, "weight": 0.2},
]
RANKER_RECIPES = ("ctr_blend", "ctr", "blend")


def default_pipeline(rankers: str = "blend") -> dict[str, Any]:
    """The pipeline `export` writes unless the recipe gives one (as a plain dict).

    `rankers` (the recipe's `rankers` switch; `export` defaults to "ctr_blend"):
    "blend" = the ranking stages blend the retrieval models' signals (z-scores; no CTR model);
    "ctr" = the coarse stage is a light CTR model (FM) and the fine stage DIN target attention,
    both trained on the candidate-ranking task (`recstack.pipeline.ranker_training`) and shipped
    in `extras/coarse_ctr`, `extras/fine_ctr`; "ctr_blend" = each stage blends its CTR model's
    score (weight 0.5) with the "blend" signals (on MovieLens the CTR models alone rank the
    candidates no better than chance: docs/serving.md)."""
    if rankers not in RANKER_RECIPES:
        raise ValueError(f"rankers must be one of {RANKER_RECIPES}, got {rankers!r}")
    blend = {
        # each signal is one ranker; the stages blend their z-scores over the candidates
        "two_tower": {"kind": "recommender", "model": "two_tower"},
        "recent_i2i": {"kind": "matrix", "matrix": "itemknn", "history_len": 20, "decay": 0.9},
        "next_item": {"kind": "matrix", "matrix": "transitions", "history_len": 3, "decay": 0.5},
        "ease": {"kind": "matrix", "matrix": "ease", "history_len": 100},
        "popularity": {"kind": "popularity"},
        # weights: equal, next-item x2 and the re-ranking strengths chosen on the validation
        # item (benchmarks/bench_pipeline.py on a holdout_part=valid bundle), never the test
        "coarse": {"kind": "blend", "parts": [{"ranker": "two_tower", "weight": 1.0},
                                              {"ranker": "recent_i2i", "weight": 1.0},
                                              {"ranker": "next_item", "weight": 2.0}]},
        "fine": {"kind": "blend", "parts": [{"ranker": "two_tower", "weight": 1.0},
                                            {"ranker": "recent_i2i", "weight": 1.0},
                                            {"ranker": "next_item", "weight": 2.0},
                                            {"ranker": "ease", "weight": 1.0},
                                            {"ranker": "popularity", "weight": 0.5}]},
    }
    out = {
        "sources": [dict(s) for s in _SOURCES],
        "rankers": blend,
        "coarse": {"ranker": "coarse", "keep": 200},
        "fine": {"ranker": "fine", "keep": 50},
        "rerank": {"filter_seen": True, "freshness_weight": 0.0, "mmr_lambda": 0.95,
                   "mmr_model": "two_tower", "category_cap": 5},
        "history_len": 100,
    }
    if rankers in ("ctr", "ctr_blend"):
        out["rankers"] = {**blend, "coarse_ctr": {"kind": "ctr", "extra": "coarse_ctr"},
                          "fine_ctr": {"kind": "ctr", "extra": "fine_ctr"}}
        out["coarse"] = {"ranker": "coarse_ctr", "keep": 200}
        out["fine"] = {"ranker": "fine_ctr", "keep": 50}
    if rankers == "ctr_blend":
        r = out["rankers"]
        r["coarse_mix"] = {"kind": "blend", "parts": [*r["coarse"]["parts"], {"ranker": "coarse_ctr", "weight": 0.5}]}
        r["fine_mix"] = {"kind": "blend", "parts": [*r["fine"]["parts"], {"ranker": "fine_ctr", "weight": 0.5}]}
        out["coarse"] = {"ranker": "coarse_mix", "keep": 200}
        out["fine"] = {"ranker": "fine_mix", "keep": 50}
    return out


@dataclass
class ExportRecipe:
    """What `export_bundle` trains and writes.

    Args:
        data: data spec (see `recstack.data.readers.load`).
        holdout: fit on the leave-one-out history only (test items held out for evaluation).
        holdout_part: with `holdout`, "test" fits on train + valid (the held-out item is each
            user's last one) and "valid" fits on train only (target: the second-to-last item;
            for choosing pipeline settings without touching the test items).
        implicit_threshold: keep ratings >= this (None = every rating is an interaction).
        category_field: item feature used for category filters and caps.
        two_tower: TwoTower hyper-parameters (the retrieval model and the coarse ranker).
        itemknn: ItemKNN hyper-parameters (the item-to-item source's similarities).
        ease: EASE hyper-parameters (None = no EASE); its weight matrix, pruned to the
            `ease_top_k` largest weights per row, is the item-item part of the fine ranker.
        transitions: `transition_matrix` options (the sequential source).
        index: IndexConfig options for the two-tower item index.
        pipeline: PipelineConfig as a dict (None = `default_pipeline(rankers)`).
        rankers: "ctr_blend" (default: CTR scores blended with the retrieval signals), "ctr"
            (coarse FM + fine DIN alone, trained on the candidate-ranking task) or "blend" (the
            retrieval models' signals only; no CTR training). See `default_pipeline`.
        ranker_task: `candidate_ranking_task` options, plus `n` / `popular` (the two-tower and
            popularity candidates negatives are drawn from).
        coarse_ctr: CTR model options overriding `ranker_training.COARSE_DEFAULTS` (e.g.
            {"model": "deepfm"}, {"dim": 8}).
        fine_ctr: CTR model options overriding `ranker_training.FINE_DEFAULTS`.
        seed: training seed.
    """

    data: str = "embedded"
    holdout: bool = False
    holdout_part: str = "test"
    implicit_threshold: float | None = None
    category_field: str | None = "genres"
    two_tower: dict[str, Any] = field(default_factory=lambda: {
        "dim": 64, "tower": [128], "epochs": 5, "batch_size": 1024, "use_history": True})
    itemknn: dict[str, Any] = field(default_factory=lambda: {"k": 100, "shrink": 10.0})
    ease: dict[str, Any] | None = field(default_factory=lambda: {"l2": 500.0})
    ease_top_k: int = 500
    transitions: dict[str, Any] = field(default_factory=lambda: {"top_k": 50, "window": 3})
    index: dict[str, Any] = field(default_factory=lambda: {"kind": "hnsw", "hnsw_m": 16,
                                                          "ef_construction": 100, "ef_search": 128})
    pipeline: dict[str, Any] | None = None
    rankers: str = "ctr_blend"
    ranker_task: dict[str, Any] = field(default_factory=lambda: {
        "n": 200, "popular": 50, "n_retrieved": 3, "n_uniform": 1, "history_len": 20,
        "max_events_per_user": 100})
    coarse_ctr: dict[str, Any] = field(default_factory=dict)
    fine_ctr: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportRecipe:
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ValueError(f"export recipe: unknown key(s) {sorted(bad)}; valid: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> ExportRecipe:
        text = Path(path).read_text()
        return cls.from_dict(yaml.safe_load(text) if str(path).endswith((".yaml", ".yml")) else json.loads(text))


def training_data(recipe: ExportRecipe) -> tuple[Interactions, Any]:
    """(the interactions models are fitted on, the leave-one-out split or None)."""
    data = load(recipe.data)
    if recipe.implicit_threshold is not None:
        data = to_implicit(data, recipe.implicit_threshold)
    if not recipe.holdout:
        return data, None
    if recipe.holdout_part not in ("test", "valid"):
        raise ValueError(f"export recipe: holdout_part must be 'test' or 'valid', got {recipe.holdout_part!r}")
    sp = split(data, standard_protocol(data).split)
    return (sp.history("train+valid") if recipe.holdout_part == "test" else sp.train), sp


def export_bundle(recipe: ExportRecipe, out: str | Path, version: str | None = None,
                  overwrite: bool = False, log=_log.info, device: str = "auto") -> Path:
    """Train the recipe's models on `device` and write the bundle to `out` (the bundle itself
    is device-free: the service loads it on the CPU)."""
    if Path(out).exists() and not overwrite:  # before minutes of training, not after
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if IndexConfig.from_dict(recipe.index).kind != "exact":  # Faiss, checked before training too
        from recstack.optional import require

        require("faiss", "index", "a bundle with a Faiss index (kind='exact' needs none)")
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    config = PipelineConfig.from_dict(recipe.pipeline or default_pipeline(recipe.rankers))  # validate first
    ctr_extras = sorted({r["extra"] for r in config.rankers.values() if r.get("kind") == "ctr"} & {"coarse_ctr", "fine_ctr"})
    t0 = time.perf_counter()
    data, _ = training_data(recipe)
    log(f"data: {len(data):,} interactions, {data.n_users:,} users, {data.n_items:,} items")
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out_ = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        log(f"{name}: {timings[name]} s")
        return out_

    tt = timed("two_tower", lambda: TwoTower(device=device, progress=False, patience=0,
                                             seed=recipe.seed, **recipe.two_tower).fit(data))
    knn = timed("itemknn", lambda: ItemKNN(device=device, **recipe.itemknn).fit(data))
    matrices = {"itemknn": knn.sim_.tocsr()}
    if recipe.ease is not None:
        ease = timed("ease", lambda: EASE(device=device, **recipe.ease).fit(data))
        matrices["ease"] = dense_top_k(ease.B_, recipe.ease_top_k)
        del ease
    matrices["transitions"] = timed("transitions", lambda: transition_matrix(data, **recipe.transitions))
    index = timed("index", lambda: build_index(item_vectors(tt), IndexConfig.from_dict(recipe.index)))
    info = {"recipe": asdict(recipe), "train_seconds": timings, "device": str(tt.device_),
            "data": {"interactions": len(data), "users": data.n_users, "items": data.n_items}}
    with tempfile.TemporaryDirectory(prefix="recstack-rankers-") as tmp:
        extras = {}
        if ctr_extras:
            info["rankers"] = timed("ctr_rankers", lambda: _train_ctr_rankers(recipe, data, tt, tmp, log, device))
            extras = {name: Path(tmp) / name for name in ctr_extras}
        path = write_bundle(
            out, config, ItemCatalog.from_interactions(data, recipe.category_field),
            UserStore.from_interactions(data), models={"two_tower": tt},
            indexes={"two_tower": index}, matrices=matrices, extras=extras,
            version=version, info=info, overwrite=overwrite)
    normal_modes(path)  # safetensors writes its files 0600
    log(f"bundle written to {path} in {time.perf_counter() - t0:.1f} s")
    return path


def _train_ctr_rankers(recipe: ExportRecipe, data: Interactions, retrieval: Any, out: str,
                       log, device: str = "auto") -> dict[str, Any]:
    """The candidate-ranking task from `retrieval`'s candidates; coarse FM + fine DIN saved
    under `out` (see `recstack.pipeline.ranker_training`)."""
    from recstack.pipeline.ranker_training import (
        candidate_ranking_task,
        retrieval_candidates,
        train_pipeline_rankers,
    )

    opts = dict(recipe.ranker_task)
    cands = retrieval_candidates(retrieval, data, n=int(opts.pop("n", 200)), popular=int(opts.pop("popular", 50)))
    task = candidate_ranking_task(data, cands, seed=recipe.seed, **opts)
    log(f"candidate-ranking task: {task.info['train']:,} train rows, {task.info['valid']:,} valid rows")
    seed = {"seed": recipe.seed}
    report = train_pipeline_rankers(task, out, {**seed, **recipe.coarse_ctr}, {**seed, **recipe.fine_ctr},
                                    device=device, log=log)
    return {"task": task.info, **{k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in report.items()}}


def recipe_with_overrides(recipe: ExportRecipe, overrides: dict[str, Any]) -> ExportRecipe:
    """A copy of `recipe` with `overrides` applied; dotted keys reach into the dict-valued options
    (``{"two_tower.epochs": 3}``)."""
    d = asdict(recipe)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in d:
            raise ValueError(f"export recipe: unknown key '{head}'; valid: {sorted(d)}")
        if rest:
            if not isinstance(d[head], dict):
                raise ValueError(f"export recipe: '{head}' is not a mapping; cannot set '{key}'")
            d[head] = {**d[head], rest: value}
        else:
            d[head] = value
    return ExportRecipe.from_dict(d)


def add_ctr_rankers(src: str | Path, out: str | Path, recipe_overrides: dict[str, Any] | None = None,
                    version: str | None = None, overwrite: bool = False, log=_log.info,
                    device: str = "auto") -> Path:
    """A copy of the bundle at `src` with the coarse / fine CTR rankers trained (as `export_bundle`
    does, on the data its manifest's recipe names, with its two-tower as the candidate
    generator) and the pipeline's stages switched to `default_pipeline(recipe.rankers)`'s (the
    "ctr_blend" ones for a "blend" recipe); the other assets
    are reused, not retrained."""
    from recstack.serving.bundle import load_bundle

    b = load_bundle(src)
    recipe = recipe_with_overrides(ExportRecipe.from_dict(b.manifest["info"]["recipe"]), recipe_overrides or {})
    data, _ = training_data(recipe)
    a = b.assets
    if data.n_items != a.catalog.n_items:
        raise ValueError(f"{src}: the recipe's data has {data.n_items} items, the bundle {a.catalog.n_items}")
    cfg = b.config.to_dict()
    ctr = default_pipeline(recipe.rankers if recipe.rankers != "blend" else "ctr_blend")
    cfg["rankers"] = {**cfg["rankers"], **{k: v for k, v in ctr["rankers"].items() if k not in cfg["rankers"]}}
    cfg["coarse"], cfg["fine"] = ctr["coarse"], ctr["fine"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recstack-rankers-") as tmp:
        report = _train_ctr_rankers(recipe, data, a.model("two_tower"), tmp, log, device)
        info = {**b.manifest["info"], "recipe": asdict(recipe), "rankers": report,
                "ctr_added_to": {"path": str(b.path), "version": b.version,
                                 "seconds": round(time.perf_counter() - t0, 1)}}
        extras = {**a.extras, "coarse_ctr": Path(tmp) / "coarse_ctr", "fine_ctr": Path(tmp) / "fine_ctr"}
        path = write_bundle(out, PipelineConfig.from_dict(cfg), a.catalog, a.users, a.models, a.indexes,
                            a.matrices, extras, version=version or f"{b.version}+ctr", info=info,
                            overwrite=overwrite)
    normal_modes(path)  # safetensors writes its files 0600
    return path
