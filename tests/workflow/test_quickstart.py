"""The main job end to end on the embedded data (the README's first command), in its fast mode:
every stage runs (one epoch per model, the pipeline on 60 users), and the report's figures are
checked against the run's results.json."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from recstack.cli import app
from recstack.workflow.report import digest

STAGES = ["retrieval: two-tower ANN only", "retrieval: all sources merged", "+ coarse ranking",
          "+ fine ranking", "full pipeline (+ re-ranking)"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    res = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--device", "cpu", "--fast"])
    assert res.exit_code == 0, res.output
    last = json.loads(res.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "results.json").read_text())
    figures = json.loads((out / "figures.json").read_text())
    return out, res, last, summary, figures


def test_every_stage_ran(run):
    out, res, last, summary, _ = run
    assert {"out", "protocol", "metrics", "device", "report", "bundle"} <= set(last)
    assert "best_model" not in summary  # nothing is chosen on the test figures
    assert last["protocol"]["name"] == "loo" and last["protocol"]["ties"] == "random(seed=0)"
    assert last["metrics"]["ease"]["ndcg@10"] == round(summary["models"]["ease"]["metrics"]["ndcg@10"], 6)
    # every model says where it trained (the bundle's models included)
    assert all(m["device"] for m in summary["models"].values())
    assert {"pop", "sasrec", "two_tower", "deepfm (ctr)", "pipeline fine_ctr"} <= set(last["devices"])
    assert last["devices"]["two_tower"] == last["devices"]["pipeline fine_ctr"] == "cpu"
    assert Path(last["report"]) == out / "report.html" and (out / "report.html").is_file()
    assert f"recstack serve {summary['bundle']}" in " ".join(res.output.split())  # the next command
    models = summary["models"]
    assert set(models) == {"pop", "itemknn", "ease", "sasrec", "two_tower", "pipeline"}
    # personalised baselines beat popularity on full-ranking NDCG@10 (fully trained even when fast)
    assert models["ease"]["metrics"]["ndcg@10"] > 1.5 * models["pop"]["metrics"]["ndcg@10"]
    assert models["itemknn"]["metrics"]["ndcg@10"] > models["pop"]["metrics"]["ndcg@10"]
    assert list(summary["stages"]) == STAGES
    for s in summary["stages"].values():
        assert 0.0 <= s["metrics"]["ndcg@10"] <= 1.0 and s["users"] == 60 and s["ms_per_request"]["total"] > 0
    for name in ("lr", "deepfm"):
        r = summary["ctr"]["models"][name]
        assert 0.5 < r["auc"] < 1.0 and r["logloss"] > 0
    assert set(summary["learning_curves"]) >= {"two_tower", "sasrec", "lr (CTR)", "deepfm (CTR)"}
    assert summary["timings"]["total"] > 0


def test_bundle_serves_the_evaluated_pipeline(run):
    from recstack.serving.bundle import load_bundle

    out, _, _, summary, _ = run
    b = load_bundle(summary["bundle"])
    names = [s.name for s in b.config.sources]
    assert "sasrec" in names and "two_tower" in names
    assert b.manifest["info"]["recipe"]["holdout"] is True  # fitted without the test items
    req, _ = b.pipeline.request(user_id=b.assets.users.ids[0], k=10)
    res = b.pipeline.run(req)
    assert len(res.items) == 10 and len(res.trace) == 10


def test_examples_have_titles_and_traces(run):
    ex = run[3]["examples"][0]
    assert len(ex["recommended"]) == 10 and all("(" in t for t in ex["recommended"])  # "Title (year)"
    assert ex["held_out"] and ex["recent"]
    t = ex["trace"][0]
    assert t["sources"] and {"retrieval", "coarse", "fine", "final"} <= set(t["scores"]) and t["rule"]


def test_figures_match_results(run):
    out, _, _, summary, figures = run
    models, stages = summary["models"], summary["stages"]
    assert set(figures) == {"metrics", "stages", "learning_curves", "embedding_map", "popularity_bias"}
    # each figure's data, as plotted, equals the numbers in results.json
    m = figures["metrics"]["data"]
    for name, values in m["values"].items():
        assert values == {k: models[name]["metrics"][k] for k in m["keys"]}
    assert set(m["values"]) == set(models)
    st = figures["stages"]["data"]
    assert st["stages"] == {n: s["metrics"]["ndcg@10"] for n, s in stages.items()}
    assert st["baselines"] == {n: models[n]["metrics"]["ndcg@10"] for n in ("pop", "itemknn", "ease")}
    lc = figures["learning_curves"]["data"]
    for name, c in summary["learning_curves"].items():
        assert lc[name] == {k: c[k] for k in ("epoch", "loss", "metric", "valid")}
    pp = summary["popularity_profile"]
    assert figures["popularity_bias"]["data"] == pp
    assert set(pp["models"]) == {"pop", "itemknn", "ease", "two_tower", "sasrec", "pipeline"}
    for prof in [pp["catalogue"], *pp["models"].values()]:  # log-spaced popularity bins
        assert len(prof) == len(pp["bin_edges"]) - 1 == 10 and abs(sum(prof) - 1.0) < 1e-9
    em = figures["embedding_map"]["data"]
    assert len(em["items"]) == len(em["x"]) == len(em["y"]) == summary["embedding_map"]["n_items"]
    counts = summary["embedding_map"]["label_counts"]
    assert {g: em["label"].count(g if g != "other" else "") for g in counts} == counts
    assert np.isfinite(em["x"]).all() and np.std(em["x"]) > 0
    # the page shows exactly these figures: each <figure> carries its data's digest
    page = (out / "report.html").read_text()
    tagged = dict(re.findall(r"<figure data-figure='([^']+)' data-digest='([0-9a-f]+)'>", page))
    assert tagged == {n: f["digest"] for n, f in figures.items()}
    assert all(digest(f["data"]) == f["digest"] for f in figures.values())
    for f in figures.values():
        assert (out / f["png"]).is_file()
    # the metrics table shows results.json's numbers (4 decimals)
    assert f"{models['ease']['metrics']['ndcg@10']:.4f}" in page
    assert f"{summary['ctr']['models']['deepfm']['auc']:.4f}" in page
    # the embedded data's terms close the page (NOTICE); other data gets no such line
    from recstack.workflow.report import EMBEDDED_DATA_TERMS, data_terms

    assert page.count("<footer") == 1 and html.escape(EMBEDDED_DATA_TERMS) in page
    assert "research use only" in EMBEDDED_DATA_TERMS and data_terms("csv:log.csv") is None


def test_the_page_shows_examples_by_title_and_models_in_their_colours(run):
    from recstack.workflow.report import model_colour

    out, _, _, summary, _ = run
    page = (out / "report.html").read_text()
    for e in summary["examples"]:
        for title in [*e["recent"], *e["held_out"], *e["recommended"]]:
            assert html.escape(title) in page
        assert set(e["by_model"]) == {"pop", "itemknn", "ease", "sasrec", "two_tower"}
        for rec in e["by_model"].values():
            assert len(rec["titles"]) == 5 and all(html.escape(t) in page for t in rec["titles"])
    # the metrics table marks each model (and each pipeline row) with its colour in the figures
    for name in summary["models"]:
        row = name if name != "pipeline" else "pipeline: full pipeline (+ re-ranking)"
        assert f"background:{model_colour(name)}'></span>{html.escape(row)}<" in page


def test_every_image_in_the_report_decodes(run):
    """The browser-free half of benchmarks/screenshot_report.py: every <img> is a valid PNG."""
    out = run[0]
    page = (out / "report.html").read_text()
    srcs = re.findall(r"<img[^>]*\ssrc='([^']+)'", page)
    assert len(srcs) == 5
    for src in srcs:
        assert src.startswith("data:image/png;base64,")  # self-contained page
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from screenshot_report import decode_images
    finally:
        sys.path.pop(0)
    assert decode_images(out / "report.html") == {"images": 5, "valid": 5, "invalid": []}


def test_quickstart_options_are_checked_before_work(tmp_path):
    from recstack.workflow.quickstart import run_quickstart

    with pytest.raises(ValueError, match="index must be 'hnsw' or 'exact'"):
        run_quickstart(out=tmp_path, index="ivf")
    res = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--index", "annoy"])
    assert res.exit_code == 2 and "index must be" in res.output
