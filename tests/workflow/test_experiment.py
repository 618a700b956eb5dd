"""`recstack train`'s experiment (`recstack.workflow.experiment`): a split given by the data
files is used as is, and ``trec_out`` writes the run and qrels of the test users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recstack.workflow.config import ExperimentConfig
from recstack.workflow.experiment import prepare, run_experiment

HEAD = "user_id:token\titem_id:token\ttimestamp:float\n"


def presplit(tmp_path: Path) -> Path:
    """RecBole pre-split files: 12 users, 8 items; test/valid hold each user's last items."""
    d = tmp_path / "bench"
    d.mkdir()
    rng = np.random.default_rng(0)
    rows = {"train": [], "valid": [], "test": []}
    for u in range(12):
        items = rng.permutation(8)[:6]
        for t, i in enumerate(items):
            part = "test" if t == 5 else "valid" if t == 4 else "train"
            rows[part].append(f"u{u}\ti{i}\t{t}")
    for part, lines in rows.items():
        (d / f"toy.{part}.inter").write_text(HEAD + "\n".join(lines) + "\n")
    return d


def test_a_split_from_the_files_is_used_as_given(tmp_path):
    cfg = ExperimentConfig(model="pop", data=f"atomic:{presplit(tmp_path)}", device="cpu")
    _, sp, proto = prepare(cfg)
    assert (len(sp.train), len(sp.valid), len(sp.test)) == (48, 12, 12)  # the files' rows, not re-split
    assert proto.name == "given-files" and proto.split == "given"
    out = run_experiment(cfg)
    assert out["protocol"]["name"] == "given-files" and out["users_evaluated"] == 12
    assert "split given by the data files" in out["protocol"]["description"]
    assert out["fit_on"] == "train+valid"
    keep = run_experiment(ExperimentConfig(model="pop", data=cfg.data, device="cpu", exclude_seen=False))
    assert keep["protocol"]["name"] == "given-files-keep-history"


def test_trec_out_writes_run_and_qrels_of_the_test_users(tmp_path):
    d = tmp_path / "trec"
    cfg = ExperimentConfig(model="pop", data=f"atomic:{presplit(tmp_path)}", device="cpu", trec_out=str(d))
    out = run_experiment(cfg)
    assert out["trec"]["depth"] == 8 and out["trec"]["users"] == 12  # top-100 capped at the catalogue
    assert set(out["metrics"]) == {f"{m}@{k}" for k in (5, 10, 20)
                                   for m in ("recall", "hr", "precision", "ndcg", "mrr", "map")}
    run = [line.split() for line in (d / "run.trec").read_text().splitlines()]
    qrels = [line.split() for line in (d / "qrels.trec").read_text().splitlines()]
    assert all(len(r) == 6 and r[1] == "Q0" and r[5] == "pop" for r in run)
    assert all(len(q) == 4 and q[1] == "0" and q[3] == "1" for q in qrels) and len(qrels) == 12
    assert {q[0] for q in qrels} == {f"u{u}" for u in range(12)} and all(q[2].startswith("i") for q in qrels)
    by_user: dict[str, list] = {}
    for r in run:
        by_user.setdefault(r[0], []).append(r)
    for rows in by_user.values():  # 8 items - 5 known ones excluded = 3 per user, ranks 1..3
        assert [int(r[3]) for r in rows] == [1, 2, 3]
        scores = [float(r[4]) for r in rows]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


def test_trec_out_refused_for_ctr_models(tmp_path):
    with pytest.raises(ValueError, match="--trec-out: 'deepfm' is a ranking"):
        run_experiment(ExperimentConfig(model="deepfm", data="embedded", trec_out=str(tmp_path)))


def test_config_json_records_trec_out(tmp_path):
    cfg = ExperimentConfig(model="pop", data=f"atomic:{presplit(tmp_path)}", device="cpu",
                           out=str(tmp_path / "o"), trec_out=str(tmp_path / "t"))
    run_experiment(cfg)
    assert json.loads((tmp_path / "o" / "config.json").read_text())["trec_out"] == str(tmp_path / "t")
    assert "trec" in json.loads((tmp_path / "o" / "result.json").read_text())


def test_cli_train_trec_out(tmp_path):
    from typer.testing import CliRunner

    from recstack.cli import app

    d = tmp_path / "trec"
    res = CliRunner().invoke(app, ["train", "--model", "pop", "--data", f"atomic:{presplit(tmp_path)}",
                                   "--device", "cpu", "--trec-out", str(d)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["protocol"]["name"] == "given-files" and r["trec"]["run"] == str(d / "run.trec")
    assert (d / "run.trec").read_text().count("\n") == 36 and (d / "qrels.trec").exists()
