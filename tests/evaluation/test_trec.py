"""TREC run / qrels export (`recstack.evaluation.trec`), checked against an independent
implementation: ranx (https://github.com/AmenRa/ranx) scores the exported files of real model
runs on the embedded MovieLens data, and its NDCG@10 / Recall@20 (and more) must equal
recstack's own metrics. Those checks are skipped only when ranx is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.data import DataError, from_raw
from recstack.evaluation.trec import strictly_decreasing, write_qrels, write_run


def lines(path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def test_run_format_raw_ids_ranks_and_skipped_slots(tmp_path):
    items = np.array([[30, 10, None], ["x", None, 20]], dtype=object)
    scores = np.array([[2.5, 1.0, 0.5], [3.0, 2.0, -np.inf]], dtype=np.float32)
    p = write_run(tmp_path / "sub" / "run.trec", np.array(["u1", 7], dtype=object), items, scores, "ease")
    assert lines(p) == [["u1", "Q0", "30", "1", "2.5", "ease"], ["u1", "Q0", "10", "2", "1.0", "ease"],
                        ["7", "Q0", "x", "1", "3.0", "ease"]]


def test_qrels_format(tmp_path):
    test = from_raw(np.array(["b", "a", "b", "b"], dtype=object), [5, 6, 6, 5])
    assert lines(write_qrels(tmp_path / "q.trec", test)) == [
        ["a", "0", "6", "1"], ["b", "0", "5", "1"], ["b", "0", "6", "1"]]  # duplicates merged


def test_ties_are_written_strictly_decreasing_in_the_given_order():
    s = np.array([[3.0, 3.0, 3.0, 1.0, 1.0], [2.0, 1.0, 0.5, -np.inf, -np.inf]], np.float32)
    out = strictly_decreasing(s)
    assert (np.diff(out[0]) < 0).all() and out[0, 0] == 3.0 and out[0, 3] == 1.0
    assert out[0, 2] == np.nextafter(np.nextafter(3.0, -np.inf), -np.inf)  # a few ulps only
    np.testing.assert_array_equal(out[1], s[1])  # untied: unchanged


@pytest.mark.parametrize(("users", "items", "name", "message"), [
    (["a b"], [[1]], "r", "id 'a b' cannot be written to a TREC file"),
    (["a"], [[""]], "r", "id '' cannot be written"),
    (["a"], [[1]], "my run", "run name 'my run' must be non-empty without whitespace"),
    (["a", "b"], [[1]], "r", "expected users [n], items and scores [n, k]"),
])
def test_bad_run_input(tmp_path, users, items, name, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        write_run(tmp_path / "r", np.array(users, dtype=object), np.array(items, dtype=object),
                  np.ones((1, 1)), name)


# ---- the independent reference: ranx on the exported files of real runs -------------------------
@pytest.fixture(scope="module")
def embedded_split():
    from recstack.workflow.config import ExperimentConfig
    from recstack.workflow.experiment import prepare

    return prepare(ExperimentConfig(model="pop", data="embedded", device="cpu"))


@pytest.mark.parametrize("model_name", ["pop", "itemknn"])
def test_ranx_on_the_exported_files_equals_our_metrics(tmp_path, embedded_split, model_name):
    """Same protocol (leave-one-out by time, known items excluded: they are not in the run),
    same top-100; ties: pop's scores are counts with many ties, which the export writes
    strictly decreasing in recstack's (seeded hash) tie order, so ranx ranks as recstack did."""
    ranx = pytest.importorskip("ranx")
    from recstack.evaluation.trec import export_trec
    from recstack.workflow.config import ExperimentConfig
    from recstack.workflow.experiment import build_model, evaluate, fit_model

    _, sp, proto = embedded_split
    model = build_model(ExperimentConfig(model=model_name, data="embedded", device="cpu"))
    fit_model(model, sp)
    result = evaluate(model, sp, proto, ks=(5, 10, 20, 100), progress=False, return_topk=True)
    info = export_trec(tmp_path, result, sp.test, run_name=model_name)
    assert info["users"] == len(result.users) == sp.test.csr().getnnz(axis=1).astype(bool).sum()
    qrels = ranx.Qrels.from_file(info["qrels"], kind="trec")
    run = ranx.Run.from_file(info["run"], kind="trec")
    names = ["ndcg@10", "recall@20", "mrr@10", "precision@5", "hit_rate@20", "ndcg@100"]
    theirs = ranx.evaluate(qrels, run, names, make_comparable=True)
    ours = result.summary()
    for name in names:
        key = name.replace("hit_rate", "hr")
        assert theirs[name] == pytest.approx(ours[key], abs=1e-12), (name, theirs[name], ours[key])
    assert ours["ndcg@10"] > 0 and ours["recall@20"] > 0


def test_ranx_sees_our_order_of_tied_items(tmp_path):
    """100 items tied at 1.0, the relevant one 61st in recstack's order: with the raw tied
    scores ranx's unstable sort moves it (to rank 14 with ranx 0.3.21); with the export's
    strictly decreasing scores it stays at rank 61."""
    ranx = pytest.importorskip("ranx")
    items = np.array([[f"i{j:03d}" for j in range(100)]], dtype=object)
    run = write_run(tmp_path / "run.trec", np.array(["u"], dtype=object), items, np.ones((1, 100)), "t")
    qrels = write_qrels(tmp_path / "qrels.trec", from_raw(np.array(["u"], dtype=object),
                                                          np.array(["i060"], dtype=object)))
    got = ranx.evaluate(ranx.Qrels.from_file(str(qrels), kind="trec"),
                        ranx.Run.from_file(str(run), kind="trec"), ["mrr@100", "recall@60"])
    assert got["mrr@100"] == pytest.approx(1 / 61) and got["recall@60"] == 0.0
