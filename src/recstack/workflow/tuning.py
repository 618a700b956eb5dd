"""Hyper-parameter search on validation data, test read once after the choice.

`recstack tune` runs this. One fixed procedure for every model and data set:

1. Split the data by its protocol (:func:`recstack.workflow.experiment.prepare`).
2. Validation data: the split's own validation part (leave-one-out splits), or, where the
   split has none (a given train/test split such as Gowalla's), ``holdout_frac`` of each
   user's training interactions held out at random (seed ``cfg.seed``); the test set is never
   touched in this step.
3. Every grid point is fitted on the rest of the training data (neural models early-stop on
   the same validation data) and scored on the validation data by full ranking under the
   protocol's exclusion and tie rule.
4. :func:`recstack.evaluation.selection.select_best` picks the point with the best
   validation ``metric``.
5. The chosen point is fitted as `recstack train` fits it (baselines on train + validation;
   neural models on the training data, refitted for the best epoch count where the
   validation data was a holdout) and scored on the test set once.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from recstack.data.dataset import Interactions
from recstack.data.transforms import Split, split
from recstack.evaluation import evaluate_ranking
from recstack.evaluation.protocol import Protocol
from recstack.evaluation.selection import Candidate, select_best
from recstack.models.base import resolve_device
from recstack.models.capabilities import EncodesSequences
from recstack.workflow.experiment import (
    ExperimentConfig,
    build_model,
    check_ks,
    evaluate,
    fit_model,
    nothing_csr,
    prepare,
)

__all__ = ["grid_points", "tune"]


Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]]


def grid_points(grid: Grid) -> list[dict[str, Any]]:
    """The points of a grid: the Cartesian product of ``{param: [values]}`` in the grid's key
    order; a list of such mappings gives the union of their products, in order (to try, say,
    each loss with its own settings).

    Raises:
        ValueError: a key without values, or an empty grid.
    """
    if isinstance(grid, list | tuple):
        points = [p for g in grid for p in grid_points(g)]
        if not points:
            raise ValueError("grid: no points")
        return points
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid: expected a mapping of parameter -> values or a list of them, got {type(grid).__name__}")
    keys = list(grid)
    values = []
    for k in keys:
        v = grid[k]
        v = list(v) if isinstance(v, list | tuple) else [v]
        if not v:
            raise ValueError(f"grid: '{k}' has no values")
        values.append(v)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


@dataclass
class _Validation:
    """What every grid point is fitted on and scored against (the test part never enters)."""

    sp: Split
    proto: Protocol
    fit_part: Interactions
    valid: Interactions
    exclude: Any
    where: str


_SETUP_CACHE: dict[tuple, _Validation] = {}


def _validation(cfg: ExperimentConfig, holdout_frac: float) -> _Validation:
    key = (cfg.data, cfg.split, cfg.protocol, cfg.exclude_seen, cfg.ties, cfg.tie_seed, cfg.seed,
           cfg.implicit_threshold, holdout_frac)
    if key not in _SETUP_CACHE:  # one load per process (worker processes keep theirs)
        _, sp, proto = prepare(cfg)
        if sp.valid is not None:
            fit_part, valid = sp.train, sp.valid
            where = "the split's validation part"
        else:
            inner = split(sp.train, "ratio", valid_frac=0.0, test_frac=holdout_frac, seed=cfg.seed)
            fit_part, valid = inner.train, inner.test
            where = f"{holdout_frac:.0%} of each user's training interactions held out (seed {cfg.seed})"
        exclude = fit_part.csr() if proto.exclude_history else nothing_csr(sp)
        _SETUP_CACHE.clear()
        _SETUP_CACHE[key] = _Validation(sp, proto, fit_part, valid, exclude, where)
    return _SETUP_CACHE[key]


def _score_point(cfg: ExperimentConfig, point: dict[str, Any], index: int, ks: tuple[int, ...],
                 holdout_frac: float, threads: int | None = None) -> Candidate:
    """Fit one grid point on the training part and score it on the validation data."""
    import torch

    from recstack.models.neural import NeuralRecommender

    if threads:
        torch.set_num_threads(threads)
    v = _validation(cfg, holdout_frac)
    model = build_model(replace(cfg, params={**cfg.params, **point}))
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if isinstance(model, NeuralRecommender):
        model.fit(v.fit_part, valid=v.valid, valid_exclude=v.exclude)
        info["best_epoch"] = model.train_result_.best_epoch
        info["epochs_run"] = model.train_result_.epochs_run
    else:
        model.fit(v.fit_part)
    if isinstance(model, EncodesSequences):  # sequential: predict the item after the training part
        model.set_history(v.fit_part)
    fit_s = time.perf_counter() - t0
    res = evaluate_ranking(model.score_all, v.valid.csr(), exclude=v.exclude if v.proto.exclude_history else None,
                           ks=ks, device=str(model.device_), ties=v.proto.ties, tie_seed=v.proto.tie_seed)
    info |= {"fit_seconds": round(fit_s, 2), "eval_seconds": round(float(res.seconds), 2)}
    return Candidate(f"{cfg.model}#{index}", dict(point), {key: float(x) for key, x in res.summary().items()},
                     info)


def tune(cfg: ExperimentConfig, grid: Grid, metric: str = "ndcg@20",
         holdout_frac: float = 0.2, run_test: bool = True, jobs: int = 1,
         log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Grid search of ``cfg.model``'s hyper-parameters on validation data (module docs).

    Args:
        cfg: The experiment; ``cfg.params`` holds the settings shared by every point.
        grid: ``{param: [values]}`` or a list of them (:func:`grid_points`); each point
            overrides ``cfg.params``.
        metric: Validation metric that selects, ``name@k`` of the ranking metrics.
        holdout_frac: Share of each user's training interactions held out as validation
            data when the split has no validation part.
        run_test: Score the selected point on the test set (once) after the choice.
        jobs: Grid points fitted at once, each in its own process (they share the device;
            worth it where one fit leaves the GPU idle between small kernels). The result
            does not depend on it.
        log: Called with one JSON-friendly dict per candidate and for the outcome.

    Returns:
        A dict with the protocol, the selection record (``selected_on: validation``, every
        candidate with its validation figures) and, with ``run_test``, the selected point's
        test metrics.
    """
    name, k = metric.split("@") if "@" in metric else (metric, "")
    if not k.isdigit():
        raise ValueError(f"metric must look like 'ndcg@20', got {metric!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    points = grid_points(grid)
    v = _validation(cfg, holdout_frac)
    sp, proto, where = v.sp, v.proto, v.where
    ks = tuple(sorted({*cfg.ks, int(k)}))
    check_ks(ks, sp.n_items)
    emit = log or (lambda row: None)

    candidates: list[Candidate] = []
    if jobs == 1:
        for i, point in enumerate(points):
            candidates.append(_score_point(cfg, point, i, ks, holdout_frac))
            emit({"stage": "validation", **candidates[-1].to_dict()})
    else:
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_score_point, cfg, point, i, ks, holdout_frac, threads): i
                       for i, point in enumerate(points)}
            done: dict[int, Candidate] = {}
            for fut in as_completed(futures):  # logged as each finishes: a cut-off run keeps them
                done[futures[fut]] = fut.result()
                emit({"stage": "validation", **done[futures[fut]].to_dict()})
            candidates = [done[i] for i in range(len(points))]  # grid order: ties resolve alike
    selection = select_best(candidates, metric, validation=where)
    out: dict[str, Any] = {"model": cfg.model, "data": cfg.data, "protocol": proto.to_dict(),
                           "device": str(resolve_device(cfg.device)), "shared_params": dict(cfg.params),
                           "n_points": len(points), **selection.to_dict()}
    emit({"stage": "selected", **{k: out[k] for k in ("selected_on", "validation", "metric", "selected")}})
    if not run_test:
        return out

    # the test set, once, for the chosen point
    from recstack.models.neural import NeuralRecommender

    chosen = selection.selected
    final_cfg = replace(cfg, params={**cfg.params, **chosen.params})
    model = build_model(final_cfg)
    t0 = time.perf_counter()
    if isinstance(model, NeuralRecommender) and sp.valid is None:
        # refit on all training data for the epoch count the holdout chose
        tc = copy.copy(model.train_config)
        model.train_config.epochs = max(1, int(chosen.info.get("best_epoch") or tc.epochs))
        model.train_config.patience = 0
        model.train_config.checkpoint_dir = None
        model.fit(sp.train)
        fit_info: dict[str, Any] = {"fit_on": "train", "refit": f"all train data, {model.train_config.epochs} epochs"}
        model.train_config = tc
    else:
        fit_info = fit_model(model, sp, seed=cfg.seed, refit=cfg.refit, exclude_seen=proto.exclude_history)
        fit_info.pop("history", None)
    train_s = time.perf_counter() - t0
    res = evaluate(model, sp, proto, cfg.ks, progress=False)
    out["test"] = {k: round(float(v), 6) for k, v in res.summary().items()}
    out["test_fit"] = fit_info | {"train_seconds": round(train_s, 2), "eval_seconds": round(float(res.seconds), 2)}
    emit({"stage": "test", "selected": chosen.to_dict(), "test": out["test"], **out["test_fit"]})
    return out
