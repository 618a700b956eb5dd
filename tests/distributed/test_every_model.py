"""Every neural model of the registry trains under 2 gloo processes through its own `fit`, and
gives the 1-process result.

One fixture starts the 2 ranks once (`spawn_local`, as tests/distributed/test_distributed.py
does, but spawned: see `two_ranks`); they fit every model in turn on the same tiny planted data and write weights, histories
and test metrics to files, which the parametrised tests compare with fits made in this process.

What "the 1-process result" means depends on where a model's loss draws randomness (see
docs/distributed.md):

* **exact** (deterministic loss given the batch, with dropout / id dropout set to 0 here):
  DDP reproduces the 1-process gradient of every global batch up to float summation order, so
  the training loss agrees to 1e-4 (relative) and every validation / test metric to 1e-6 (a
  ranking or an AUC pair flips only for two scores closer than the weights' error; none do on
  this data). The weights agree to 5e-3: Adam divides each gradient by its running RMS, which
  turns the ~1e-7 summation-order noise of a coordinate whose gradient is near zero (a dead ReLU
  unit, a rarely used row) into steps of up to `lr`; most coordinates agree to 1e-6.
* **approximate** (`APPROXIMATE`: negatives, masks or noise drawn per rank, in-batch negative
  pools or batch statistics of the rank's half of the batch): 2 processes follow another, equally
  valid, random path. They train with lr 0.05 (further along in 2 epochs: their seed-to-seed
  spread is then 0-0.23 instead of up to 0.6), and their test metric must lie within `_tolerance`
  of the 1-process one: twice the largest difference between 1-process runs with seeds 0, 1, 2
  (the seed-to-seed noise of the very same fit, estimated from 3 draws), plus 0.05 so that a model
  whose 3 seeds happen to agree is not held to float precision.

For every model both ranks must also end with bit-identical weights (DDP kept them in sync) and
report identical validation histories and test metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from recstack.data import from_raw
from recstack.data.transforms import split
from recstack.distributed import evaluate_ranking_sharded, spawn_local
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.tasks import interactions_ctr_task
from recstack.models.neural import NeuralRecommender
from recstack.models.registry import create_model, entries, model_class

#: every neural model of the registry (trained by the shared Trainer), by task
NEURAL = [e.name for e in entries() if issubclass(model_class(e.name), NeuralRecommender | CTRModel)]
TASK = {e.name: e.task for e in entries()}

#: models whose 2-process run is another random path than the 1-process one, and why
APPROXIMATE = {
    "mf": "BPR negatives drawn per rank",
    "lightgcn": "BPR negatives drawn per rank",
    "neumf": "negatives drawn per rank",
    "youtube_dnn": "shared sampled negatives drawn per rank",
    "two_tower": "in-batch negatives from the rank's half of the batch",
    "multvae": "reparameterisation noise drawn per rank",
    "bert4rec": "masked positions drawn per rank",
    "din": "BatchNorm statistics of the rank's half of the batch",
}
EPOCHS = 2
RESUMED = ("sasrec", "deepfm")  # a 2-process checkpoint of these resumes in 1 process


def planted() -> tuple:
    """96 users x 10 events in 3 groups of 10 items; within a group the next item is the current
    one + 1 (sequential signal); ratings >= 4 mostly on even items (a CTR signal). Every user has
    the same length, so every sequence window has as many target positions (see the note on
    sequence losses in docs/distributed.md)."""
    rng = np.random.default_rng(0)
    n_users, length = 96, 10
    users = np.repeat(np.arange(n_users), length)
    t = np.tile(np.arange(length), n_users)
    start = rng.integers(0, 10, n_users)
    items = (users % 3) * 10 + (start[users] + t) % 10
    rating = np.where(items % 2 == 0, 5.0, 2.0)
    rating = np.where(rng.random(len(users)) < 0.2, 7.0 - rating, rating)
    data = from_raw(users, items, rating=rating, timestamp=t * 1000 + users)
    return split(data, "loo"), interactions_ctr_task(data, min_freq=1)


def params(name: str, seed: int = 0, **extra) -> dict:
    """Small, fast settings; no dropout of any kind (its masks come from the global RNG)."""
    specs = model_class(name).param_specs()
    p = dict(epochs=EPOCHS, batch_size=47, lr=0.01, progress=False, patience=0, plateau_factor=1.0,
             seed=seed, eval_every=1)
    small = dict(dim=8, hidden=16, latent=8, dropout=0.0, id_dropout=0.0, n_negatives=4, max_len=8,
                 n_layers=1, n_blocks=1)
    if name in APPROXIMATE:
        p["lr"] = 0.05
    if name == "youtube_dnn":
        # negatives shared by a batch: N ranks draw N independent sets, so the global batch sees
        # N x n_negatives of them; with 4 of 30 items that changes the estimator itself (2
        # processes fit markedly better); with 64 draws (popularity sampler, accidental hits
        # removed) nearly every item is a negative in both runs
        small["n_negatives"] = 64
    return p | {k: v for k, v in small.items() if k in specs} | extra


def fit(name: str, seed: int = 0, **extra):
    split_, task = planted()
    m = create_model(name, device="cpu", **params(name, seed, **extra))
    if TASK[name] == "ctr":
        m.fit(task)
        metrics, per_user = {k: float(v) for k, v in m.evaluate(task.test).items() if k not in ("rows", "seconds")}, {}
    else:
        m.fit(split_.train, valid=split_.valid)
        exclude = (split_.train.csr() + split_.valid.csr()).tocsr()
        res = evaluate_ranking_sharded(m.score_all, split_.test.csr(), exclude, ks=(10,), device="cpu")
        metrics, per_user = res.summary(), res.per_user
    hist = [{k: v for k, v in h.items() if k == "loss" or k.startswith("valid_")} for h in m.train_result_.history]
    return m, {"metrics": metrics, "history": hist}, per_user


def weights(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous().clone() for k, v in m.module_.state_dict().items()}


# ---- what each of the 2 ranks runs ----------------------------------------------------------
def _ranks(out: str) -> None:
    rank, o = dist.get_rank(), Path(out)
    for name in NEURAL:
        m, result, _ = fit(name)
        save_file(weights(m), str(o / f"{name}.{rank}.safetensors"))
        (o / f"{name}.{rank}.json").write_text(json.dumps(result))
    for name in RESUMED:  # one epoch, checkpointed by rank 0; a test resumes it in 1 process
        fit(name, epochs=1, checkpoint_dir=str(o / f"ckpt-{name}"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("every-model")
    # "spawn", not "fork": after other tests ran torch in this process, forked children can
    # deadlock on a thread pool's lock inherited from the parent
    spawn_local(_ranks, 2, args=(str(out),), start_method="spawn")
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tolerance(name: str, metric: str) -> float:
    """2x the seed-to-seed spread of the 1-process fit (seeds 0-2) + 0.05 (module docstring)."""
    values = [fit(name, seed)[1]["metrics"][metric] for seed in (0, 1, 2)]
    return 2 * (max(values) - min(values)) + 0.05


def _primary(name: str) -> str:
    return "auc" if TASK[name] == "ctr" else "ndcg@10"


# ---- tests ----------------------------------------------------------------------------------
def test_registry_lists_every_family():
    assert {"mf", "lightgcn", "neumf", "two_tower", "youtube_dnn", "multvae", "gru4rec", "caser", "sasrec",
            "bert4rec", "bsarec", "deepfm", "dlrm"} <= set(NEURAL)
    assert set(APPROXIMATE) <= set(NEURAL)


@pytest.mark.parametrize("name", NEURAL)
def test_two_processes_match_one(two_ranks, name):
    got = [json.loads((two_ranks / f"{name}.{r}.json").read_text()) for r in (0, 1)]
    w = [load_file(str(two_ranks / f"{name}.{r}.safetensors")) for r in (0, 1)]
    for k in w[0]:  # DDP kept the replicas identical, bit for bit
        torch.testing.assert_close(w[1][k], w[0][k], atol=0, rtol=0, msg=f"{name}: {k} differs between ranks")
    assert got[0] == got[1], f"{name}: ranks report different histories / metrics"
    assert len(got[0]["history"]) == EPOCHS

    m, ref, _ = fit(name)
    primary = _primary(name)
    metric = ref["metrics"][primary]
    assert np.isfinite(metric)
    if name in APPROXIMATE:
        tol = _tolerance(name, primary)
        diff = abs(got[0]["metrics"][primary] - metric)
        assert diff <= tol, (f"{name} ({APPROXIMATE[name]}): 2-process {primary}={got[0]['metrics'][primary]:.4f}, "
                             f"1-process {metric:.4f}, |diff|={diff:.4f} > tolerance {tol:.4f}")
        return
    for k, v in weights(m).items():
        torch.testing.assert_close(w[0][k], v, atol=5e-3, rtol=0, msg=f"{name}: {k}")
    for a, b in zip(got[0]["history"], ref["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), name
        for k in b:
            if k.startswith("valid_"):
                assert a[k] == pytest.approx(b[k], abs=1e-6), f"{name}: {k}"
    for k, v in ref["metrics"].items():
        assert got[0]["metrics"][k] == pytest.approx(v, abs=1e-6, rel=1e-5), f"{name}: test {k}"


@pytest.mark.parametrize("name", RESUMED)
def test_two_process_checkpoint_resumes_in_one_process(two_ranks, tmp_path, name):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_ranks / f"ckpt-{name}", ckpt)
    resumed, got, _ = fit(name, checkpoint_dir=str(ckpt))  # epoch 2 of 2, in this process
    full, ref, _ = fit(name)
    assert len(got["history"]) == EPOCHS
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(resumed)[k], v, atol=5e-3, rtol=0, msg=f"{name}: {k}")
    for k, v in ref["metrics"].items():
        assert got["metrics"][k] == pytest.approx(v, abs=1e-6, rel=1e-5), f"{name}: test {k}"


def test_cli_nproc_2_matches_one_process(tmp_path):
    """`recstack train --nproc 2` (torchrun's launcher, gloo) gives the 1-process test metrics of
    an exact model (SASRec without dropout), and prints one JSON line for the job."""
    import os
    import subprocess
    import sys

    import polars as pl

    split_, _ = planted()
    rows = [(int(u), int(i), int(t)) for part in (split_.train, split_.valid, split_.test)
            for u, i, t in zip(part.user_vocab.raw[part.user], part.item_vocab.raw[part.item],
                               part.timestamp, strict=True)]
    pl.DataFrame(rows, schema=["u", "i", "t"], orient="row").write_csv(tmp_path / "x.csv")
    cmd = [sys.executable, "-m", "recstack", "train", "--model", "sasrec", "--device", "cpu",
           "--data", f"csv:{tmp_path / 'x.csv'}?user=u&item=i&timestamp=t"]
    for k, v in params("sasrec").items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def last_json(extra: list[str]) -> dict:
        done = subprocess.run(cmd + extra, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        assert len(lines) == 1, done.stdout[-2000:]  # rank 0 alone prints the result
        return json.loads(lines[0])

    one, two = last_json([]), last_json(["--nproc", "2"])
    assert one["metrics"] and set(one["metrics"]) == set(two["metrics"])
    for k, v in one["metrics"].items():
        assert two["metrics"][k] == pytest.approx(v, abs=1e-6), k
