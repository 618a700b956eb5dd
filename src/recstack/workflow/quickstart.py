"""`recstack quickstart`: the whole stack on the embedded MovieLens data, in one command.

1. data: MovieLens latest-small (shipped in the package); leave-one-out split by time.
2. baselines: most popular, ItemKNN, EASE, fitted on train + valid.
3. a sequential model (SASRec), early-stopping on the validation item.
4. a ranking model (DeepFM) beside logistic regression on the ratings as a CTR task
   (label: rating >= 4; temporal split): test AUC and LogLoss.
5. the serving bundle (`recstack.workflow.export`, fitted on train + valid only): the two-tower
   retriever and its HNSW index, item-item and transition matrices, the coarse / fine CTR
   rankers trained on the candidates retrieval proposes; SASRec is added as one more candidate
   source of the four-stage pipeline (retrieval -> coarse -> fine -> re-ranking).
6. evaluation of every model and of the pipeline after each stage, by full ranking of the same
   held-out item of every user (known items excluded), plus beyond-accuracy metrics.
7. the HTML report (metrics table, learning curves, a 2-D map of the item embeddings by genre,
   popularity bias, example recommendations with titles and the stage trace), `results.json`,
   `figures.json` (the exact numbers each figure was drawn from) and the bundle.

Every number in the report comes from the summary written to results.json.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.evaluation import coverage, gini, novelty
from recstack.models import EASE, ItemKNN, MostPopular
from recstack.models.base import resolve_device
from recstack.progress import bar, step
from recstack.workflow.experiment import evaluate, fit_model, standard_protocol

log = logging.getLogger(__name__)
KS = (5, 10, 20)
TABLE_KEYS = ["ndcg@10", "hr@10", "recall@20", "ndcg@20", "coverage@20", "gini@20", "novelty@20"]
FIGURE_KEYS = ["ndcg@10", "hr@10", "recall@20"]
# the genre a movie is coloured by in the embedding map: the first of these it has
MAP_GENRES = ["Animation", "Horror", "Documentary", "Sci-Fi", "Romance", "Crime", "Comedy", "Drama"]


@dataclass(frozen=True)
class Settings:
    """How much training the quickstart does (`fast`: a smoke test of every stage). Every model
    trains with its own defaults except what fits the run into a few minutes on a laptop CPU:
    the epoch counts below, SASRec on one window per user (`all_windows=False`) with the larger
    learning rate and smaller batches that suit so few examples, and two blocks instead of three
    (the serving path's per-request cost; `sasrec_budget`), and DeepFM's
    larger learning rate for 4 epochs instead of 20 (`deepfm_budget`)."""

    two_tower_epochs: int = 4
    sasrec_epochs: int = 8
    ctr_epochs: int = 4  # DeepFM / LR on the rating task
    pipeline_ranker_epochs: int = 2  # the pipeline's coarse FM / fine DIN
    ranker_events_per_user: int = 25  # positives per user of the candidate-ranking task
    eval_users: int | None = None  # users the pipeline is evaluated on (None: every test user)
    n_examples: int = 3
    sasrec_budget: tuple[tuple[str, Any], ...] = (("all_windows", False), ("dropout", 0.2), ("lr", 3e-3),
                                                  ("batch_size", 64), ("patience", 0), ("n_blocks", 2))
    deepfm_budget: tuple[tuple[str, Any], ...] = (("lr", 1e-3),)  # 4 epochs, not its default 20
    index: str = "hnsw"  # the bundle's item index: hnsw (Faiss) | exact
    report: bool = True  # write report.html and its figures


FAST = Settings(two_tower_epochs=1, sasrec_epochs=1, ctr_epochs=1, pipeline_ranker_epochs=1,
                ranker_events_per_user=3, eval_users=60, n_examples=2)


def _threads(requested: int | None) -> int:
    """CPU threads for torch: as asked, else the cores left idle by other processes (on a busy
    2-core machine one thread trains several times faster than two fighting for the cores)."""
    if requested:
        return max(1, int(requested))
    cpus = os.cpu_count() or 1
    try:
        load_1 = os.getloadavg()[0]
    except OSError:
        load_1 = 0.0
    return max(1, min(cpus, int(cpus - load_1 + 0.5)))


def _titles(data, items: np.ndarray) -> list[str]:
    feats = data.item_features
    if feats is not None and "title" in feats.text:
        return [str(t) for t in feats.text["title"][items]]
    return [str(r) for r in data.item_vocab.decode(items)]


def _genres(data) -> list[list[str]]:
    feats = data.item_features
    if feats is None or "genres" not in feats.multihot:
        return [[] for _ in range(data.n_items)]
    off, val, voc = feats.multihot["genres"]
    voc = np.asarray(voc).astype(str)
    return [voc[val[off[i]:off[i + 1]]].tolist() for i in range(data.n_items)]


def _beyond(recs: np.ndarray, item_pop: np.ndarray, n_items: int, n_users: int) -> dict[str, float]:
    return {"coverage@20": float(coverage(recs, n_items)), "gini@20": float(gini(recs, n_items)),
            "novelty@20": float(novelty(recs, item_pop, n_users))}


def _curve(history: list[dict[str, Any]], metric: str | None) -> dict[str, Any]:
    """A learning curve as plain lists (what the figure draws and results.json keeps)."""
    key = f"valid_{metric}" if metric else None
    has = bool(key) and all(key in h for h in history)
    return {"epoch": [int(h["epoch"]) for h in history], "loss": [float(h["loss"]) for h in history],
            "seconds": [float(h.get("seconds", 0.0)) for h in history],
            "metric": metric if has else None, "valid": [float(h[key]) for h in history] if has else []}


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def without_matrix(cfg: dict[str, Any], matrix: str) -> dict[str, Any] | None:
    """`cfg` without the rankers that read item-item matrix `matrix` (blend parts dropped; a blend
    left empty goes too), or None when a source or a stage itself needs it."""
    cfg = copy.deepcopy(cfg)
    if any(src.get("matrix") == matrix for src in cfg["sources"]):
        return None
    rankers = cfg.get("rankers", {})
    gone = {n for n, r in rankers.items() if r.get("kind") == "matrix" and r.get("matrix") == matrix}
    changed = True
    while changed:
        changed = False
        for n, r in rankers.items():
            if n not in gone and r.get("kind") == "blend":
                r["parts"] = [p for p in r["parts"] if p["ranker"] not in gone]
                if not r["parts"]:
                    gone.add(n)
                    changed = True
    if any((cfg.get(st) or {}).get("ranker") in gone for st in ("coarse", "fine")):
        return None
    cfg["rankers"] = {n: r for n, r in rankers.items() if n not in gone}
    return cfg


# ---- the pipeline, stage by stage ---------------------------------------------------------------
NEUTRAL_RERANK = {"filter_seen": True, "freshness_weight": 0.0, "mmr_lambda": 1.0, "category_cap": None}


def stage_variants(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline cut after each stage: retrieval (one source, then all merged), + coarse
    ranking, + fine ranking, the full pipeline (+ re-ranking rules)."""
    ann = [s for s in cfg["sources"] if s["kind"] == "ann"]
    plain = {**cfg, "rerank": {**cfg["rerank"], **NEUTRAL_RERANK}}
    return {
        "retrieval: two-tower ANN only": {**plain, "sources": ann, "coarse": None, "fine": None},
        "retrieval: all sources merged": {**plain, "coarse": None, "fine": None},
        "+ coarse ranking": {**plain, "fine": None},
        "+ fine ranking": plain,
        "full pipeline (+ re-ranking)": cfg,
    }


def run_pipeline_users(pipe, users: np.ndarray, ids: np.ndarray, k: int, desc: str
                       ) -> tuple[np.ndarray, dict[str, float]]:
    """Top-k of `pipe` for each user (one request each, as the service runs them) ->
    (items [n_users, k], -1 where fewer came back; mean ms per stage)."""
    recs = np.full((len(users), k), -1, np.int64)
    ms: dict[str, float] = {}
    with bar(desc, len(users), log) as prog:
        for row, u in enumerate(users.tolist()):
            req, _ = pipe.request(user_id=ids[u], k=k)
            res = pipe.run(req)
            recs[row, : len(res.items)] = res.items
            for key, v in res.timings_ms.items():
                ms[key] = ms.get(key, 0.0) + v
            prog.advance(0)
    return recs, {key: v / max(1, len(users)) for key, v in ms.items()}


def _hits(recs: np.ndarray, test_csr, users: np.ndarray) -> np.ndarray:
    """[n_users, k] bool: recommended item is one of the user's held-out items (vectorised)."""
    sub = test_csr[users]
    rows = np.repeat(np.arange(len(users)), recs.shape[1])
    cols = np.maximum(recs.ravel(), 0)
    return (np.asarray(sub[rows, cols]).ravel() > 0).reshape(recs.shape) & (recs >= 0)


# ---- the run ----------------------------------------------------------------------------------------
def run_quickstart(out: Path = Path("recstack-out/quickstart"), device: str = "auto",
                   n_examples: int | None = None, fast: bool = False,
                   threads: int | None = None, index: str = "hnsw", report: bool = True) -> dict[str, Any]:
    """Run the quickstart and return its summary (also written to `out/results.json`).

    Args:
        index: the bundle's item index: "hnsw" (Faiss) or "exact" (brute force, no Faiss).
        report: write report.html and its figures (matplotlib); without, results.json only.
    """
    if index not in ("hnsw", "exact"):
        raise ValueError(f"index must be 'hnsw' or 'exact', got {index!r}")
    from recstack.optional import require  # the extras it needs, before minutes of training

    if index != "exact":
        require("faiss", "index", "the quickstart's HNSW index (index='exact' needs none)")
    if report:
        require("matplotlib", "report", "the quickstart's report (report=False needs none)")
    settings = FAST if fast else Settings()
    settings = replace(settings, index=index, report=report)
    if n_examples is not None:
        settings = replace(settings, n_examples=n_examples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_threads = _threads(threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        return _run(out, device, settings, n_threads, fast)
    finally:
        torch.set_num_threads(previous_threads)


def _run(out: Path, device: str, S: Settings, n_threads: int, fast: bool) -> dict[str, Any]:
    from recstack.models.ctr import interactions_ctr_task
    from recstack.models.registry import create_model
    from recstack.pipeline import PipelineConfig, build_pipeline, ranking_metrics
    from recstack.pipeline.matrices import dense_top_k
    from recstack.serving.bundle import load_bundle, write_bundle
    from recstack.workflow.export import (
        ExportRecipe,
        default_pipeline,
        export_bundle,
        recipe_with_overrides,
    )

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def clock(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    # ---- 1. data ----
    t0 = time.perf_counter()
    with step("loading the embedded MovieLens latest-small", log) as s:
        data = load("embedded")
        s["done"] = f"embedded MovieLens: {len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} movies"
    proto = standard_protocol(data)
    with step("leave-one-out split by time", log):
        sp = split(data, proto.split)
    fit_data = sp.history("train+valid")
    item_pop = fit_data.item_counts()
    test_csr = sp.test.csr()
    clock("data", t0)

    models: dict[str, dict[str, Any]] = {}
    topk: dict[str, np.ndarray] = {}
    topk_row: dict[str, dict[int, int]] = {}  # model -> user -> its row of topk[model]
    curves: dict[str, dict[str, Any]] = {}

    def record(name: str, kind: str, model, fit_s: float, extra: dict[str, Any] | None = None,
               trained_on: str | None = None) -> None:
        res = evaluate(model, sp, proto, KS, progress=False, return_topk=True)
        recs = np.asarray(res.topk[:, : max(KS)])
        metrics = {k: float(v) for k, v in res.summary().items()}
        metrics.update(_beyond(recs, item_pop, data.n_items, data.n_users))
        models[name] = {"kind": kind, "metrics": metrics, "train_seconds": round(fit_s, 2),
                        "eval_seconds": round(float(res.seconds), 2), "users": int(len(res.users)),
                        "device": trained_on or str(model.device_), **(extra or {})}
        topk[name] = recs
        topk_row[name] = {int(u): i for i, u in enumerate(np.asarray(res.users).tolist())}

    # ---- 2. baselines ----
    t0 = time.perf_counter()
    fitted = {}
    ease_l2 = float((ExportRecipe().ease or {}).get("l2", 500.0))  # the bundle reuses these weights
    for model in (MostPopular(device=device), ItemKNN(device=device), EASE(l2=ease_l2, device=device)):
        with step(f"fitting and evaluating the baseline {model.name}", log):
            t1 = time.perf_counter()
            model.fit(fit_data)
            record(model.name, "baseline", model, time.perf_counter() - t1)
        fitted[model.name] = model
    clock("baselines", t0)

    # ---- 3. sequential model ----
    t0 = time.perf_counter()
    log.info("SASRec: %d epochs, validation NDCG@10 after each", S.sasrec_epochs, extra={"style": "bold"})
    sasrec = create_model("sasrec", device=device, epochs=S.sasrec_epochs, progress=True,
                          **dict(S.sasrec_budget))
    fit_info = fit_model(sasrec, sp, exclude_seen=proto.exclude_history)
    fit_s = time.perf_counter() - t0
    with step("evaluating SASRec (full ranking)", log):
        record("sasrec", "sequential", sasrec, fit_s, {"best_epoch": fit_info.get("best_epoch")})
    curves["sasrec"] = _curve(fit_info.get("history", []), "ndcg@10")
    clock("sasrec", t0)

    # ---- 4. ranking model: ratings as a CTR task ----
    t0 = time.perf_counter()
    with step("building the CTR task (label: rating >= 4, temporal split)", log):
        task = interactions_ctr_task(data)
    ctr: dict[str, Any] = {"task": {k: task.info[k] for k in ("threshold", "train", "valid", "test")},
                           "models": {}}
    for name in ("lr", "deepfm"):  # their defaults: chosen on MovieLens 100K validation AUC
        log.info("%s on the rating CTR task: %d epochs", name, S.ctr_epochs, extra={"style": "bold"})
        t1 = time.perf_counter()
        budget = dict(S.deepfm_budget) if name == "deepfm" else {}
        r = create_model(name, device=device, epochs=S.ctr_epochs, progress=True, **budget).fit(task)
        train_s = time.perf_counter() - t1
        ev = r.evaluate(task.test)
        ctr["models"][name] = {"auc": float(ev["auc"]), "logloss": float(ev["logloss"]),
                               "train_seconds": round(train_s, 2), "best_epoch": r.train_result_.best_epoch,
                               "device": str(r.device_)}
        curves[f"{name} (CTR)"] = _curve(r.train_result_.history, "auc")
        if name == "deepfm":
            r.save(out / "models" / "deepfm_ctr")
    clock("ctr_rankers", t0)

    # ---- 5. the bundle: two-tower + index, matrices, pipeline rankers; SASRec as a source ----
    t0 = time.perf_counter()
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)  # the trainer appends to its JSONL logs
    # EASE is not fitted twice: export trains everything but EASE (its pipeline without the EASE
    # signal) and the bundle gets the baseline's weights, pruned as export prunes them (same data,
    # train + valid, same l2), with export's own pipeline
    base = ExportRecipe(holdout=True)
    full_cfg = base.pipeline or default_pipeline(getattr(base, "rankers", "blend"))
    staging_cfg = without_matrix(full_cfg, "ease")
    overrides: dict[str, Any] = {
        "index.kind": S.index,
        "two_tower.epochs": S.two_tower_epochs,
        "two_tower.log_path": str(logs / "two_tower.jsonl"),
        "ranker_task.max_events_per_user": S.ranker_events_per_user,
        "coarse_ctr": {"epochs": S.pipeline_ranker_epochs, "progress": True,
                       "log_path": str(logs / "coarse_ctr.jsonl")},
        "fine_ctr": {"epochs": S.pipeline_ranker_epochs, "progress": True,
                     "log_path": str(logs / "fine_ctr.jsonl")},
    }
    reuse_ease = staging_cfg is not None and base.ease is not None
    if reuse_ease:
        overrides |= {"ease": None, "pipeline": staging_cfg}
    recipe = recipe_with_overrides(base, overrides)
    staging = out / ".bundle-export"
    # (no spinner around it: the rankers' training shows its own progress bars)
    log.info("serving stack: two-tower (%d epochs), HNSW index, item-item and transition matrices, "
             "coarse / fine CTR rankers", S.two_tower_epochs, extra={"style": "bold"})
    export_bundle(recipe, staging, overwrite=True, log=lambda m: log.info("  %s", m), device=device)
    with step("adding SASRec to the pipeline and writing the bundle", log) as s:
        b = load_bundle(staging)
        a = b.assets
        cfg = copy.deepcopy(full_cfg) if reuse_ease else b.config.to_dict()
        cfg["sources"] = [*cfg["sources"], {"name": "sasrec", "kind": "sequential", "model": "sasrec",
                                            "n": 100, "last_n": sasrec.max_len}]
        info = dict(b.manifest.get("info", {}))
        info["quickstart"] = {"sasrec": "added as a candidate source"}
        matrices = dict(a.matrices)
        ease = fitted.pop("ease")
        if reuse_ease:
            info["recipe"] = {**info.get("recipe", {}), "ease": base.ease, "pipeline": base.pipeline}
            info["quickstart"]["ease"] = "the baseline's weights (train + valid), top-k pruned"
            matrices["ease"] = dense_top_k(ease.B_.cpu(), recipe.ease_top_k)
        del ease
        bundle_path = write_bundle(out / "bundle", PipelineConfig.from_dict(cfg), a.catalog, a.users,
                                   {**a.models, "sasrec": sasrec}, a.indexes, matrices, a.extras,
                                   info=info, overwrite=True)
        del b, a, matrices
        shutil.rmtree(staging, ignore_errors=True)
        s["done"] = f"bundle written to {bundle_path}"
    bundle = load_bundle(bundle_path)
    manifest_info = bundle.manifest.get("info", {})
    clock("bundle", t0)

    # the two-tower of the bundle, exact full ranking (no index, no pipeline)
    tt = bundle.assets.model("two_tower")
    with step("evaluating the two-tower retriever (exact full ranking)", log):
        record("two_tower", "retrieval", tt, float(manifest_info.get("train_seconds", {}).get("two_tower", 0.0)),
               {"evaluated_on": str(tt.device_)}, trained_on=manifest_info.get("device"))
    curves = {"two_tower": _curve(_read_log(logs / "two_tower.jsonl"), None), **curves}
    for name in ("coarse_ctr", "fine_ctr"):
        hist = _read_log(logs / f"{name}.jsonl")
        if hist:
            curves[f"pipeline {name}"] = _curve(hist, "auc")

    # ---- 6. the pipeline after each stage ----
    t0 = time.perf_counter()
    test_users = np.flatnonzero(np.diff(test_csr.indptr) > 0)
    users = test_users
    if S.eval_users is not None and S.eval_users < len(users):
        users = np.sort(np.random.default_rng(0).choice(users, S.eval_users, replace=False))
    n_targets = np.diff(test_csr.indptr)[users]
    ids = bundle.assets.users.ids
    stages: dict[str, dict[str, Any]] = {}
    pipes = {}
    for name, vcfg in stage_variants(bundle.config.to_dict()).items():
        pipe = build_pipeline(PipelineConfig.from_dict(vcfg), bundle.assets)
        pipes[name] = pipe
        t1 = time.perf_counter()
        recs, ms = run_pipeline_users(pipe, users, ids, max(KS), f"pipeline: {name}")
        metrics = ranking_metrics(_hits(recs, test_csr, users), n_targets, KS)
        metrics.update(_beyond(recs, item_pop, data.n_items, data.n_users))
        stages[name] = {"metrics": metrics, "ms_per_request": {k: round(v, 3) for k, v in ms.items()},
                        "users": int(len(users)), "seconds": round(time.perf_counter() - t1, 2)}
        topk[name] = recs
        log.info("  %-32s ndcg@10 %.4f  hr@10 %.4f  %.1f ms/request", name, metrics["ndcg@10"],
                 metrics["hr@10"], ms.get("total", 0.0))
    full_name = "full pipeline (+ re-ranking)"
    models["pipeline"] = {"kind": "pipeline", "device": "cpu (the service's)", **stages[full_name]}
    topk["pipeline"] = topk[full_name]
    clock("pipeline_eval", t0)

    # ---- 7. examples: a few users, what they watched, the pipeline's top 10 with its trace ----
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    genres = _genres(data)
    full_pipe = pipes[full_name]
    examples = []
    for u in sorted(rng.choice(test_users, size=min(S.n_examples, len(test_users)), replace=False).tolist()):
        hist = fit_data.subset(fit_data.user == u)
        order = np.argsort(hist.timestamp, kind="stable")[-5:][::-1]
        req, _ = full_pipe.request(user_id=ids[u], k=10)
        res = full_pipe.run(req)
        held = test_csr.indices[test_csr.indptr[u]:test_csr.indptr[u + 1]]
        titles = _titles(data, res.items)
        examples.append({
            "user": str(data.user_vocab.decode(np.array([u]))[0]),
            "recent": _titles(data, hist.item[order]),
            "held_out": _titles(data, held),
            "recommended": titles,
            "hit": [bool(i in set(held.tolist())) for i in res.items.tolist()],
            "trace": [{"title": t, "genres": genres[tr["item"]], **{k: tr[k] for k in ("sources", "source_ranks", "scores", "rule")}}
                      for t, tr in zip(titles, res.trace_dicts(), strict=True)],
            "timings_ms": {k: round(v, 3) for k, v in res.timings_ms.items()},
            # each evaluated model's own top 5 for this user (the evaluation's ranking)
            "by_model": {name: {"titles": _titles(data, topk[name][rows[u]][:5]),
                                "hit": [bool(i in set(held.tolist())) for i in topk[name][rows[u]][:5].tolist()]}
                         for name, rows in topk_row.items() if u in rows},
        })

    # ---- 8. embedding map and popularity profiles (data of the figures) ----
    from recstack.index.embeddings import item_vectors
    from recstack.workflow.report import (
        catalogue_profile,
        embedding_map,
        popularity_bins,
        popularity_profile,
    )

    min_count = 5
    shown = np.flatnonzero(item_pop >= min_count)
    coords = embedding_map(np.asarray(item_vectors(tt), np.float64)[shown])
    labels = [next((g for g in MAP_GENRES if g in genres[i]), "") for i in shown.tolist()]  # "": other
    emb_map = {"model": "two_tower", "min_interactions": min_count, "items": shown.tolist(),
               "x": [round(float(v), 5) for v in coords[:, 0]], "y": [round(float(v), 5) for v in coords[:, 1]],
               "label": labels, "label_counts": {g or "other": labels.count(g) for g in [*MAP_GENRES, ""]}}
    bias_models = ["pop", "itemknn", "ease", "two_tower", "sasrec", "pipeline"]
    edges = popularity_bins(item_pop)
    popularity = {"bin_edges": edges, "catalogue": catalogue_profile(item_pop, edges),
                  "models": {n: popularity_profile(topk[n], item_pop, edges) for n in bias_models}}
    clock("examples", t0)

    summary: dict[str, Any] = {
        "data": "embedded (MovieLens latest-small)",
        "data_stats": {"interactions": len(data), "users": data.n_users, "items": data.n_items},
        "protocol": proto.to_dict(),
        "device": str(resolve_device(device)),
        "threads": n_threads,
        "fast": fast,
        "settings": asdict(S),
        "models": models,
        "stages": stages,
        "ctr": ctr,
        "pipeline_rankers": manifest_info.get("rankers"),
        "bundle_device": manifest_info.get("device"),
        "learning_curves": curves,
        "popularity_profile": popularity,
        "embedding_map": {k: emb_map[k] for k in ("model", "min_interactions", "label_counts")}
                         | {"n_items": len(shown)},
        "examples": examples,
        "bundle": str(bundle_path),
        "bundle_version": bundle.version,
        "out": str(out),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }

    # ---- 9. the report ----
    t0 = time.perf_counter()
    summary["seconds_to_report"] = round(t0 - t_start, 2)
    report_path = None
    if S.report:
        with step("writing the HTML report", log):
            report_path = write_report(out, summary, emb_map)
    clock("report", t0)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    summary["timings"] = timings
    summary["report"] = str(report_path) if report_path else None
    summary["seconds"] = timings["total"]
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    log.info("Report:  %s", report_path or "not written (--no-report)")
    log.info("Results: %s (figures' data: %s)", out / "results.json", out / "figures.json")
    log.info("Bundle:  %s", bundle_path)
    log.info("Total:   %.0f s on %s (%d torch thread(s))", timings["total"], summary["device"], n_threads)
    log.info("Next:    recstack serve %s", bundle_path)
    return summary


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """The quickstart's results as Rich tables (the CLI prints them; the library never does)."""
    table = Table(title=f"MovieLens latest-small ({summary['protocol']['description']})")
    table.add_column("model / pipeline stage")
    cols = ["ndcg@10", "hr@10", "recall@20", "coverage@20", "novelty@20"]
    for c in cols:
        table.add_column(c, justify="right")
    rows = {n: m["metrics"] for n, m in summary["models"].items() if n != "pipeline"}
    rows |= {f"pipeline: {n}": s["metrics"] for n, s in summary["stages"].items()}
    for name, m in rows.items():
        table.add_row(name, *[f"{m[c]:.4f}" for c in cols])
    ctr = Table(title="Ranking: ratings as a CTR task (test)")
    for c in ("model", "AUC", "LogLoss"):
        ctr.add_column(c)
    for name, r in summary["ctr"]["models"].items():
        ctr.add_row(name, f"{r['auc']:.4f}", f"{r['logloss']:.4f}")
    return [table, ctr]


# ---- the HTML report ----------------------------------------------------------------------------
def _fmt_score(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_report(out: Path, summary: dict[str, Any], emb_map: dict[str, Any]) -> Path:
    """report.html + figures/*.png + figures.json, every figure drawn from `summary`'s numbers."""
    from recstack.workflow import report as R

    figs = R.Figures()
    models, stages = summary["models"], summary["stages"]
    # 1. models and the full pipeline on the headline metrics
    bars = {n: {k: m["metrics"][k] for k in FIGURE_KEYS} for n, m in models.items()}
    figs.add("metrics", R.plot_metrics(bars, FIGURE_KEYS), {"keys": FIGURE_KEYS, "values": bars},
             "Full-ranking accuracy on each user's held-out last movie (known movies excluded; "
             "ties broken at random).")
    # 2. the pipeline stage by stage against the baselines
    stage_vals = {n: s["metrics"]["ndcg@10"] for n, s in stages.items()}
    base_vals = {n: models[n]["metrics"]["ndcg@10"] for n in ("pop", "itemknn", "ease")}
    figs.add("stages", R.plot_stages(stage_vals, base_vals, "ndcg@10"),
             {"metric": "ndcg@10", "stages": stage_vals, "baselines": base_vals},
             "NDCG@10 of the pipeline cut after each stage; dashed lines: the baselines.")
    # 3. learning curves
    lc = {n: {k: c[k] for k in ("epoch", "loss", "metric", "valid")} for n, c in summary["learning_curves"].items()}
    figs.add("learning_curves", R.plot_training_curves(lc), lc,
             "Each model in its colour: training loss per epoch (upper panel) and the validation metric "
             "it monitored (lower panel); the two-tower of the bundle trains on all known data.")
    # 4. the item embedding map
    coords = np.column_stack([emb_map["x"], emb_map["y"]])
    figs.add("embedding_map", R.plot_embedding_map(coords, emb_map["label"], "two-tower item embeddings (PCA)"),
             {k: emb_map[k] for k in ("items", "x", "y", "label")},
             f"Two-tower item vectors of the {len(emb_map['items']):,} movies with at least "
             f"{emb_map['min_interactions']} ratings, projected on their two principal components; "
             f"colour: the first of {', '.join(MAP_GENRES)} the movie has.")
    # 5. popularity bias
    figs.add("popularity_bias", R.plot_popularity_bias(summary["popularity_profile"]), summary["popularity_profile"],
             "Share of each model's top-20 recommendations by the popularity of the movie (its ratings "
             "in the training data, bins of equal width on the log scale); grey: the share of all movies "
             "in each bin, what recommending uniformly at random would give.")
    figs.write(out)

    sections: list[tuple[str, str]] = []
    b = summary["bundle"]
    sections.append(("Where everything is", (
        f"<p>Serving bundle: <code>{R._esc(b)}</code> &mdash; next: <code>recstack serve {R._esc(b)}</code></p>"
        f"<p class='note'>results.json (every number on this page), figures.json (the data of each figure), "
        f"figures/*.png, models/deepfm_ctr. {R._esc(summary['device'])}, {summary['threads']} torch thread(s); "
        f"run time {summary['seconds_to_report']:.0f} s up to this report.</p>")))
    rows = {n: m["metrics"] for n, m in models.items() if n != "pipeline"}
    rows |= {f"pipeline: {n}": s["metrics"] for n, s in stages.items()}
    extra = {n: {"fit s": f"{m['train_seconds']:.1f}"} for n, m in models.items() if "train_seconds" in m}
    extra |= {f"pipeline: {n}": {"ms/request": f"{s['ms_per_request'].get('total', 0):.1f}"} for n, s in stages.items()}
    sections.append(("Accuracy and beyond-accuracy metrics", (
        R.metrics_table(rows, TABLE_KEYS, extra=extra,
                        colours={n: R.model_colour(n) for n in models}
                        | {f"pipeline: {n}": R.model_colour("pipeline") for n in stages})
        + f"<p class='note'>Protocol {R._esc(summary['protocol']['description'])}; "
        f"{models['pop']['users']} users; test figures, no model was selected on them; pipeline rows: "
        f"{stages[next(iter(stages))]['users']} users, one request each through the bundle's pipeline "
        "(fitted on train + valid only).</p>" + figs.html("metrics"))))
    sections.append(("The four-stage pipeline, stage by stage", figs.html("stages")))
    ctr = summary["ctr"]
    ctr_rows = {n: {"AUC": r["auc"], "LogLoss": r["logloss"]} for n, r in ctr["models"].items()}
    ctr_html = R.metrics_table(ctr_rows, ["AUC", "LogLoss"], colours={n: R.model_colour(f"{n} (CTR)") for n in ctr_rows})
    ctr_html += (f"<p class='note'>Ratings as a CTR task: label rating &ge; {ctr['task']['threshold']}, temporal split "
                 f"({ctr['task']['train']:,} / {ctr['task']['valid']:,} / {ctr['task']['test']:,} rows).</p>")
    pr = summary.get("pipeline_rankers") or {}
    pr_rows = {f"{n} ({v.get('model', '')})": {"valid AUC": v["valid"]["auc"], "valid LogLoss": v["valid"]["logloss"]}
               for n, v in pr.items() if isinstance(v, dict) and isinstance(v.get("valid"), dict)}
    if pr_rows:
        ctr_html += ("<p>The pipeline's own rankers, trained on the candidates retrieval proposes:</p>"
                     + R.metrics_table(pr_rows, ["valid AUC", "valid LogLoss"],
                                       colours={f"{n} ({v.get('model', '')})": R.model_colour(f"pipeline {n}")
                                                for n, v in pr.items() if isinstance(v, dict)}))
    sections.append(("Ranking models", ctr_html))
    sections.append(("Learning curves", figs.html("learning_curves")))
    sections.append(("Item embeddings", figs.html("embedding_map")))
    sections.append(("Popularity bias", figs.html("popularity_bias")))
    sections.append(("Example recommendations (full pipeline, with the stage trace)", _examples_html(summary["examples"], R)))
    page = R.render_html("recstack quickstart",
                         f"{summary['data']}: {summary['data_stats']['interactions']:,} ratings, "
                         f"{summary['data_stats']['users']:,} users, {summary['data_stats']['items']:,} movies "
                         f"- {summary['date']}", sections, footer=R.data_terms(summary["data"]))
    path = out / "report.html"
    path.write_text(page)
    return path


def _examples_html(examples: list[dict[str, Any]], R) -> str:
    parts = []
    for e in examples:
        head = (f"<p><b>user {R._esc(e['user'])}</b> &mdash; recently watched: "
                f"{R._esc('; '.join(e['recent']))}<br/>held-out next movie: <b>{R._esc('; '.join(e['held_out']))}</b></p>")
        rows = ["<tr><th>#</th><th>movie</th><th>sources (rank)</th><th>retrieval</th><th>coarse</th>"
                "<th>fine</th><th>final</th><th>rule</th></tr>"]
        for j, t in enumerate(e["trace"]):
            cls = " class='hit'" if e["hit"][j] else ""
            src = ", ".join(f"{s} ({r + 1})" for s, r in t["source_ranks"].items()) or ", ".join(t["sources"])
            sc = t["scores"]
            nums = "".join(f"<td class='num'>{_fmt_score(sc.get(k))}</td>" for k in ("retrieval", "coarse", "fine", "final"))
            rows.append(f"<tr{cls}><td>{j + 1}</td><td>{R._esc(t['title'])}"
                        f"<span class='tag'>{R._esc('|'.join(t['genres'][:3]))}</span></td><td>{R._esc(src)}</td>"
                        f"{nums}<td>{R._esc(t['rule'])}</td></tr>")
        ms = e["timings_ms"].get("total", 0.0)
        by_model = e.get("by_model") or {}
        models_html = ""
        if by_model:
            cells = []
            for name, rec in by_model.items():
                titles = "".join(f"<li{' class=hit' if hit else ''}>{R._esc(t)}</li>"
                                 for t, hit in zip(rec["titles"], rec["hit"], strict=True))
                cells.append(f"<div class='model'><b>{R.swatch(name)}{R._esc(name)}</b><ol>{titles}</ol></div>")
            models_html = ("<p>Each model's own top 5 for this user (full ranking, as evaluated):</p>"
                           f"<div class='models'>{''.join(cells)}</div>")
        parts.append(f"<div class='card'>{head}<table class='trace'>{''.join(rows)}</table>"
                     f"<p class='note'>{ms:.1f} ms for this request; green: the held-out movie.</p>{models_html}</div>")
    return "".join(parts)
