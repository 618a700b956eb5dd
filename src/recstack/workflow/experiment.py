"""One experiment: load data, split it by the data set's standard protocol, fit, evaluate.

This is what `recstack train` runs; its result is a plain dict (the CLI prints it as JSON).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from recstack.data.dataset import Interactions
from recstack.data.readers import load
from recstack.data.transforms import Split, split, to_implicit
from recstack.evaluation import evaluate_ranking
from recstack.evaluation.protocol import Protocol, get_protocol
from recstack.models.base import Recommender, resolve_device
from recstack.models.capabilities import EncodesSequences
from recstack.models.registry import create_model
from recstack.progress import step
from recstack.training.trainer import steady_samples_per_s
from recstack.workflow.config import ExperimentConfig
from recstack.workflow.output import add_peak_rss, check_writable_dir, normal_modes, strict_json


def standard_protocol(data: Interactions, split_override: str | None = None) -> Protocol:
    """The named protocol the literature uses for this data set's format (see
    :mod:`recstack.evaluation.protocol` and the shared data README).

    - lightgcn (Gowalla & co.): ``lightgcn``: the given split, the user's train items excluded.
    - s3rec / sasrec: ``s3rec``: leave-one-out in sequence order, the items already in the
      user's sequence excluded (S3-Rec's evaluation code; RecBole masks the same items).
    - data whose files give the split (RecBole's pre-split ``NAME.train/.valid/.test.inter``:
      a fold column): ``given-files``: that split as is, known items excluded.
    - anything else with timestamps: ``loo``: leave-one-out by time, known items excluded;
      without timestamps: ``ratio`` (per-user random 80/10/10), known items excluded.
    """
    if data.fmt == "lightgcn":
        proto = get_protocol("lightgcn")
    elif data.fmt in ("s3rec", "sasrec"):
        proto = get_protocol("s3rec")
    elif data.fold is not None:
        proto = get_protocol("given-files")
    elif data.timestamp is not None:
        proto = get_protocol("loo")
    else:
        proto = get_protocol("ratio")
    return proto.with_options(split=split_override)


def prepare(cfg: ExperimentConfig) -> tuple[Interactions, Split, Protocol]:
    """Load and split the data as the config says."""
    with step(f"loading {cfg.data}") as s:
        data = load(cfg.data)
        s["done"] = f"loaded {data.name}: {len(data):,} interactions, {data.n_users:,} users, {data.n_items:,} items"
    if cfg.implicit_threshold is not None:
        data = to_implicit(data, cfg.implicit_threshold)
    proto = resolve_protocol(cfg, data)
    with step(f"splitting ({proto.split})"):
        kw = {"seed": cfg.seed} if proto.split == "ratio" else {}
        sp = split(data, proto.split, **kw)
    return data, sp, proto


def resolve_protocol(cfg: ExperimentConfig, data: Interactions) -> Protocol:
    """The protocol a config asks for: the named one (else the data set's standard one) with
    the config's split, exclusion and tie options applied; its name follows the options."""
    base = get_protocol(cfg.protocol) if cfg.protocol else standard_protocol(data)
    return base.with_options(exclude_history=cfg.exclude_seen, split=cfg.split, ties=cfg.ties,
                             tie_seed=cfg.tie_seed)


def build_model(cfg: ExperimentConfig) -> Recommender:
    """The config's model, unfitted (its defaults overridden by ``cfg.params``); a model with a
    ``seed`` hyper-parameter gets the run's ``--seed`` unless the params set one."""
    from recstack.models.registry import model_class

    params = dict(cfg.params)
    if "seed" not in params and "seed" in model_class(cfg.model).param_specs():
        params["seed"] = cfg.seed
    return create_model(cfg.model, device=cfg.device, **params)


def evaluate(model: Recommender, sp: Split, proto: Protocol, ks=(5, 10, 20), progress: bool = True,
             return_topk: bool = False):
    """Full-ranking evaluation of `model` on the split's test part."""
    known = sp.history("train+valid") if sp.valid is not None else sp.train
    if isinstance(model, EncodesSequences):  # sequential models predict the item after all known ones
        model.set_history(known)
    history = known.csr()
    return evaluate_ranking(
        model.score_all,
        test=sp.test.csr(),
        exclude=history if proto.exclude_history else None,
        ks=ks,
        device=str(model.device_),
        progress=progress,
        return_topk=return_topk,
        ties=proto.ties,
        tie_seed=proto.tie_seed,
    )


def nothing_csr(sp: Split):
    """An empty exclusion matrix of the split's shape (protocols that keep history rankable)."""
    import scipy.sparse

    return scipy.sparse.csr_matrix((sp.n_users, sp.n_items), dtype=np.float32)


def fit_model(model: Recommender, sp: Split, seed: int = 0, valid_frac: float = 0.05,
              refit: bool = True, exclude_seen: bool = True) -> dict[str, Any]:
    """Fit `model` on the split's known data the way its kind needs; return facts for the log.

    - Non-neural baselines have nothing to tune on validation data: they are fitted on
      train + valid, so a user's whole known history ranks the (unseen) test items.
    - Neural models early-stop on the validation part. Where the split has none (a given
      train/test split such as Gowalla's) a random `valid_frac` of each user's training
      interactions is held out for early stopping, never the test set; with `refit` the model is
      then trained again on all training data for the best number of epochs.
    - Sequential models (those with `set_history`) validate like the test is run: known items
      are excluded only when `exclude_seen` (the protocol's choice); afterwards their inputs
      become train + valid, so the valid item is part of the test input.
    """
    from recstack.models.neural import NeuralRecommender

    if not isinstance(model, NeuralRecommender):
        model.fit(sp.history("train+valid") if sp.valid is not None else sp.train)
        return {"fit_on": "train+valid" if sp.valid is not None else "train", **getattr(model, "fit_info_", {})}
    if sp.valid is not None and isinstance(model, EncodesSequences):
        model.fit(sp.train, valid=sp.valid, valid_exclude=None if exclude_seen else nothing_csr(sp))
        model.set_history(sp.history("train+valid"))
        return {"fit_on": "train", "early_stopping_on": "valid", "selected_on": "validation",
                "best_epoch": model.train_result_.best_epoch, "history": model.train_result_.history}
    if sp.valid is not None:
        model.fit(sp.train, valid=sp.valid, valid_exclude=None if exclude_seen else nothing_csr(sp))
        return {"fit_on": "train", "early_stopping_on": "valid", "selected_on": "validation",
                "best_epoch": model.train_result_.best_epoch, "history": model.train_result_.history}
    inner = split(sp.train, "ratio", valid_frac=0.0, test_frac=valid_frac, seed=seed)
    model.fit(inner.train, valid=inner.test, valid_exclude=inner.train.csr())
    first = model.train_result_
    info: dict[str, Any] = {"fit_on": "train", "early_stopping_on": f"{valid_frac:.0%} of train held out",
                            "selected_on": "validation",
                            "best_epoch": first.best_epoch, "history": first.history}
    if refit and first.best_epoch > 0:
        cfg = model.train_config
        saved = (cfg.epochs, cfg.patience, cfg.checkpoint_dir)
        cfg.epochs, cfg.patience, cfg.checkpoint_dir = first.best_epoch, 0, None
        model.fit(sp.train)
        cfg.epochs, cfg.patience, cfg.checkpoint_dir = saved
        info["refit"] = f"all train data, {first.best_epoch} epochs"
    return info


#: Items per user in the TREC run of ``--trec-out`` (more when the metrics' largest k is larger).
TREC_DEPTH = 100


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Fit `cfg.model` on `cfg.data` and evaluate it with the standard protocol; with
    ``cfg.trec_out``, also write the test users' top-``max(100, max(ks))`` as ``run.trec`` and
    the test interactions as ``qrels.trec`` there (raw ids; see :mod:`recstack.evaluation.trec`)."""
    from recstack.models.registry import entry

    if entry(cfg.model).task == "ctr":  # ranking (CTR) models: AUC / LogLoss on a CTR task
        if cfg.trec_out:
            raise ValueError(f"--trec-out: '{cfg.model}' is a ranking (CTR) model; it writes no ranked lists")
        from recstack.workflow.ctr import run_ctr_experiment

        return run_ctr_experiment(cfg)
    if cfg.out:  # before any work: a run must not end in "cannot write"
        check_writable_dir(cfg.out)
    if cfg.trec_out:
        check_writable_dir(cfg.trec_out, "--trec-out")
    np.random.seed(cfg.seed)
    data, sp, proto = prepare(cfg)
    check_ks(cfg.ks, sp.n_items)
    model = build_model(cfg)
    with step(f"fitting {cfg.model}"):
        t0 = time.perf_counter()
        fit_info = fit_model(model, sp, seed=cfg.seed, refit=cfg.refit, exclude_seen=proto.exclude_history)
        train_seconds = time.perf_counter() - t0
    depth = min(max(TREC_DEPTH, *cfg.ks), sp.n_items) if cfg.trec_out else None
    with step("evaluating (full ranking)"):  # one top-k serves the metrics and the TREC run
        ks = tuple(sorted({*cfg.ks, depth})) if depth else cfg.ks
        result = evaluate(model, sp, proto, ks, return_topk=depth is not None)
    ours = {f"@{k}" for k in cfg.ks}
    metrics = {k: round(float(v), 6) for k, v in result.summary().items() if k[k.index("@"):] in ours}
    out = {
        "model": cfg.model,
        "data": cfg.data,
        "protocol": proto.to_dict(),
        "metrics": metrics,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(float(result.seconds), 3),
        "device": str(resolve_device(cfg.device)),
        "params": model.get_params() | {"device": cfg.device},
        "users_evaluated": int(len(result.users)),
        "train_samples_per_s": steady_samples_per_s(fit_info.get("history", [])),
        **{k: v for k, v in fit_info.items() if k != "history"},
    }
    if depth:
        from recstack.evaluation.trec import export_trec

        with step(f"writing the TREC run and qrels to {cfg.trec_out}"):
            out["trec"] = export_trec(cfg.trec_out, result, sp.test, run_name=cfg.model, depth=depth)
    add_peak_rss(out)  # merged into a model's own "memory" facts (EASE's), never replacing them
    if cfg.out:
        d = Path(cfg.out)
        d.mkdir(parents=True, exist_ok=True)
        model.save(d / "model")
        normal_modes(d / "model")  # weights.safetensors is written 0600 by safetensors
        (d / "result.json").write_text(strict_json(out, indent=2))
        (d / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        if "history" in fit_info:
            (d / "history.json").write_text(strict_json(fit_info["history"], indent=2))
    return out


def check_ks(ks: tuple[int, ...] | list[int], n_items: int) -> None:
    """Refuse metric cut-offs beyond the catalogue (every item is ranked by then, and a huge k's
    padded top-k blocks exhaust memory); the default cut-offs (5, 10, 20) stay valid on any
    catalogue, as they always were.

    Raises:
        ValueError: one line naming the k and the catalogue size.
    """
    standard = ExperimentConfig.__dataclass_fields__["ks"].default
    too_big = [k for k in ks if k > n_items and k not in standard]
    if too_big:
        raise ValueError(f"ks: k={max(too_big):,} is larger than the catalogue ({n_items:,} items); "
                         f"use ks of at most {n_items:,}")
