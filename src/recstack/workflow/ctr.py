"""The CTR experiment behind `recstack train --model <ranking model> --data ...`.

* An interaction log with ratings (``atomic:``, ``movielens:``, ``csv:`` ...): the CTR task of
  :func:`recstack.models.ctr.tasks.interactions_ctr_task` (label rating >= 4, user + item features,
  recent history, temporal split, early stopping on valid AUC).
* ``criteo:FILE``: a Criteo TSV read in chunks; rows in file order, the last 10% test and the
  10% before it validation (the log is ordered by time); 13 integer features log-standardised,
  26 categorical with vocabularies (min_freq) or hashing (``--set hash_buckets=N``).

Task options are passed with ``--set`` like model parameters: ``label_threshold``,
``history_len``, ``min_freq``, ``hash_buckets``, ``max_rows``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recstack.evaluation.ranking import resolve_device
from recstack.evaluation.selection import Candidate, select_best
from recstack.features.specs import Categorical, FeatureSpec, Numeric
from recstack.models.ctr.tasks import CTRTask, interactions_ctr_task
from recstack.models.registry import create_model
from recstack.progress import step
from recstack.training.trainer import steady_samples_per_s
from recstack.workflow.config import TASK_OPTIONS, CTRTaskOptions
from recstack.workflow.output import add_peak_rss, check_writable_dir, normal_modes, strict_json


def criteo_features(min_freq: int = 10, hash_buckets: int = 0) -> list[FeatureSpec]:
    """Criteo schema: I1-I13 log + standardise, C1-C26 vocabularies or hashing."""
    from recstack.data.criteo import CAT_COLUMNS, INT_COLUMNS

    return [*(Numeric(c, transforms=("log", "standardize")) for c in INT_COLUMNS),
            *(Categorical(c, min_freq=min_freq, hash_buckets=hash_buckets) for c in CAT_COLUMNS)]


def criteo_task(path: str, min_freq: int = 10, hash_buckets: int = 0, max_rows: int | None = None,
                valid_frac: float = 0.1, test_frac: float = 0.1) -> CTRTask:
    """A Criteo TSV as a CTR task, split in file (time) order."""
    from recstack.data.criteo import read_criteo

    frame = read_criteo(path, max_rows=max_rows)
    n = frame.height
    n_test, n_valid = int(round(n * test_frac)), int(round(n * valid_frac))
    n_train = n - n_test - n_valid
    return CTRTask(frame.head(n_train), frame.slice(n_train, n_valid), frame.tail(n_test),
                   criteo_features(min_freq, hash_buckets), None,
                   {"rows": n, "train": n_train, "valid": n_valid, "test": n_test})


SYNTHETIC = "synthetic-criteo"


def synthetic_criteo_task(spec: str, valid_frac: float = 0.1, test_frac: float = 0.1) -> CTRTask:
    """``synthetic-criteo:ROWS[?seed=S&max_cardinality=M]``: a Criteo-shaped click log of ROWS
    rows from `recstack.data.synthetic_ctr` (26 categorical fields with Criteo's cardinalities
    capped at M, default 1,000,000; 13 counts; a planted label), split in row order 80/10/10.
    The categorical fields are hashed into as many buckets as they have values, so the tables
    have the generator's sizes (those `benchmarks/bench_dlrm.py` trains) and nothing is fitted."""
    from recstack.data.criteo import CAT_COLUMNS, INT_COLUMNS
    from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig

    rest = spec.split(":", 1)[1] if ":" in spec else ""
    rows_text, _, query = rest.partition("?")
    opts: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("seed", "max_cardinality"):
            raise ValueError(f"{spec}: unknown option '{part}'; valid: seed=N, max_cardinality=N")
        opts[key] = value
    try:
        rows = int(float(rows_text.replace("_", ""))) if rows_text else 0
        seed, cap = int(opts.get("seed", 0)), int(opts.get("max_cardinality", 1_000_000))
    except ValueError:
        raise ValueError(f"{spec}: expected {SYNTHETIC}:ROWS[?seed=N&max_cardinality=N] with integers") from None
    if rows < 10 or cap < 1:
        raise ValueError(f"{spec}: ROWS must be at least 10 and max_cardinality at least 1")
    gen = SyntheticCTR(SyntheticCTRConfig(seed=seed, max_cardinality=cap))
    frame = gen.table(rows, chunk_rows=1_000_000)
    features: list[FeatureSpec] = [*(Numeric(c, transforms=("log", "standardize")) for c in INT_COLUMNS),
                                   *(Categorical(c, hash_buckets=int(card)) for c, card in zip(CAT_COLUMNS, gen.cards, strict=True))]
    n_test, n_valid = int(round(rows * test_frac)), int(round(rows * valid_frac))
    n_train = rows - n_test - n_valid
    return CTRTask(frame.head(n_train), frame.slice(n_train, n_valid), frame.tail(n_test), features, None,
                   {"rows": rows, "train": n_train, "valid": n_valid, "test": n_test, "seed": seed,
                    "max_cardinality": cap, "table_rows": int(sum(int(c) + 1 for c in gen.cards))})


def load_task(data: str, options: dict[str, Any]) -> tuple[CTRTask, str]:
    """The CTR task of a data spec, and a one-line description of its protocol."""
    o = CTRTaskOptions(**options)
    if data.startswith(f"{SYNTHETIC}:"):
        task = synthetic_criteo_task(data)
        return task, (f"{SYNTHETIC}: generated Criteo-shaped log, row order 80/10/10 train/valid/test, "
                      "early stopping on valid AUC")
    if data.startswith("criteo:"):
        task = criteo_task(data.split(":", 1)[1], min_freq=10 if o.min_freq is None else o.min_freq,
                           hash_buckets=o.hash_buckets, max_rows=o.max_rows)
        return task, "criteo: file order 80/10/10 train/valid/test, early stopping on valid AUC"
    from recstack.data.errors import DataError
    from recstack.data.readers import load, parse_spec

    log = load(data)
    if parse_spec(data)[0] == "split" and (log.rating is None or log.timestamp is None):
        raise DataError(f"{data}: a CTR task labels rating >= label_threshold by time, and this "
                        "split directory has no rating or timestamp column; prepare it with one, "
                        "e.g. recstack data prepare --streaming 'csv:FILE?rating=COLUMN' --out DIR")
    task = interactions_ctr_task(log, threshold=o.label_threshold, history_len=o.history_len,
                                 min_freq=2 if o.min_freq is None else o.min_freq)
    return task, (f"CTR: label rating >= {o.label_threshold:g}, temporal split 80/10/10 (global time), "
                  "history strictly before each event, early stopping on valid AUC")


def run_ctr_experiment(cfg: Any) -> dict[str, Any]:
    """Fit a ranking model on a CTR task and report test AUC / LogLoss (`cfg`: ExperimentConfig)."""
    if cfg.out:  # before any work: a run must not end in "cannot write"
        check_writable_dir(cfg.out)
    params = dict(cfg.params)
    options = {k: params.pop(k) for k in TASK_OPTIONS if k in params}
    with step(f"building the CTR task from {cfg.data}") as s:
        task, protocol = load_task(cfg.data, options)
        s["done"] = f"CTR task: {task.info.get('train'):,} train / {task.info.get('valid'):,} valid / {task.info.get('test'):,} test rows"
    params.setdefault("seed", cfg.seed)
    ranker = create_model(cfg.model, device=cfg.device, **params)
    with step(f"fitting {ranker.name}"):
        t0 = time.perf_counter()
        ranker.fit(task)
        train_seconds = time.perf_counter() - t0
    with step("evaluating (test AUC, LogLoss)"):
        res = ranker.evaluate(task.test, where="test frame")
    metrics = {k: round(float(v), 6) for k, v in res.items() if k not in ("rows", "seconds")}
    tr = ranker.train_result_
    out = {
        "model": ranker.name,
        "data": cfg.data,
        "protocol": protocol,
        "metrics": metrics,
        "auc": metrics["auc"],
        "logloss": metrics["logloss"],
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": res["seconds"],
        "device": str(resolve_device(cfg.device)),
        "params": ranker.get_params() | options,
        "best_epoch": tr.best_epoch,
        "valid_auc": round(float(tr.best_metrics.get("auc", float("nan"))), 6),
        "train_samples_per_s": steady_samples_per_s(tr.history),
        # which training path ran (DLRM's fused table + kernels + CUDA graph, or the plain loop) and why
        "fast_path": ranker.fast_path_.to_dict(),
        "rows": {k: task.info.get(k) for k in ("train", "valid", "test")},
    }
    add_peak_rss(out)
    if cfg.out:
        d = Path(cfg.out)
        d.mkdir(parents=True, exist_ok=True)
        ranker.save(d / "model")
        normal_modes(d / "model")  # weights.safetensors is written 0600 by safetensors
        (d / "result.json").write_text(strict_json(out, indent=2))
        (d / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
        (d / "history.json").write_text(strict_json(tr.history, indent=2))
    return out



def compare_ctr_models(task: CTRTask, models: Mapping[str, Mapping[str, Any]], device: str = "cpu",
                       seed: int = 0, metric: str = "auc", run_test: bool = True,
                       log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fit several ranking models on one CTR task and choose the best on VALIDATION.

    Each model is fitted on ``task.train`` (early stopping on ``task.valid``) and scored on
    ``task.valid``; :func:`~recstack.evaluation.selection.select_best` picks by the validation
    ``metric`` (``auc``, higher is better, or ``logloss``). Only then, with ``run_test``, is
    ``task.test`` scored, for every candidate (the comparison table) and never used to choose.

    Args:
        task: The CTR task (its ``valid`` frame is required).
        models: Model name -> hyper-parameters (`create_model` keyword arguments).
        device: As for any model.
        seed: As for any model.
        log: Called with one JSON-friendly dict per fitted candidate and for the outcome.

    Returns:
        The selection record (``selected_on: validation``, every candidate's validation AUC and
        LogLoss) plus ``test``: model -> test AUC / LogLoss, and ``selected_test``.
    """
    if task.valid is None or task.valid.height == 0:
        raise ValueError("compare_ctr_models: the task has no validation frame to choose on")
    if metric not in ("auc", "logloss"):
        raise ValueError(f"compare_ctr_models: metric must be 'auc' or 'logloss', got {metric!r}")
    emit = log or (lambda row: None)
    fitted: dict[str, Any] = {}
    candidates: list[Candidate] = []
    for name, params in models.items():
        t0 = time.perf_counter()
        r = create_model(name, device=device, **{"seed": seed, "progress": False, **dict(params)})
        r.fit(task)
        train_s = time.perf_counter() - t0
        v = r.evaluate(task.valid, where="validation frame")
        tr = r.train_result_
        cand = Candidate(name, {k: list(x) if isinstance(x, tuple) else x for k, x in params.items()},
                         {"auc": float(v["auc"]), "logloss": float(v["logloss"])},
                         {"best_epoch": tr.best_epoch, "epochs_run": tr.epochs_run,
                          "train_seconds": round(train_s, 1)})
        candidates.append(cand)
        fitted[name] = r
        emit({"stage": "validation", **cand.to_dict()})
    sel = select_best(candidates, metric, higher_is_better=(metric == "auc"),
                      validation="the task's validation frame")
    out: dict[str, Any] = sel.to_dict()
    emit({"stage": "selected", **{k: out[k] for k in ("selected_on", "validation", "metric", "selected")}})
    if run_test:
        test: dict[str, dict[str, float]] = {}
        for name, r in fitted.items():
            res = r.evaluate(task.test, where="test frame")
            test[name] = {k: round(float(v), 6) for k, v in res.items()
                          if k not in ("rows", "seconds")}
        out["test"] = test
        out["selected_test"] = test[sel.selected.name]
        emit({"stage": "test", "selected": sel.selected.name, "test": test})
    return out

