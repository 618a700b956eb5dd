"""The main job end to end on the embedded data (the README's first command)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from recstack.cli import app
from recstack.models import Recommender


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    res = CliRunner().invoke(app, ["quickstart", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    last = json.loads(res.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "results.json").read_text())
    assert last["best_model"] == summary["best_model"]
    models = summary["models"]
    assert set(models) == {"pop", "itemknn", "ease"}
    # personalised baselines must beat popularity on full-ranking NDCG@10
    assert models["ease"]["metrics"]["ndcg@10"] > 1.5 * models["pop"]["metrics"]["ndcg@10"]
    assert models["itemknn"]["metrics"]["ndcg@10"] > models["pop"]["metrics"]["ndcg@10"]
    # example recommendations carry movie titles, and saved models load back
    ex = summary["examples"][0]
    assert len(ex["recommended"]) == 5 and all("(" in t for t in ex["recommended"])
    loaded = Recommender.load(out / "models" / "ease", device="cpu")
    assert loaded.name == "ease"
