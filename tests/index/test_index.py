"""Vector indexes: exact search against numpy, Faiss kinds against exact, persistence without
pickle, embedding tables of models, the benchmark's recall and the CLI."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data import from_raw
from recstack.index import (
    ExactIndex,
    IndexConfig,
    build_index,
    embedding_tables,
    item_vectors,
    load_index,
    recall_at_k,
    synthetic_catalogue,
)
from recstack.index.bench import bench_indexes
from recstack.models import MF, ItemKNN


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny problems: threads only add overhead (and OpenMP spin-waits on a busy machine)
    n, nf = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(nf)


@pytest.fixture(scope="module")
def clustered():
    v = synthetic_catalogue(3000, 16, n_clusters=30, seed=0)
    q = synthetic_catalogue(50, 16, n_clusters=30, seed=5)
    return v, q


def numpy_topk(v: np.ndarray, q: np.ndarray, k: int, metric: str = "ip") -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: full scores, order by (score desc, id asc)."""
    s = q @ v.T if metric == "ip" else -((q[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    ids = np.stack([np.lexsort((np.arange(v.shape[0]), -row))[:k] for row in s])
    return np.take_along_axis(s, ids, 1), ids


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_matches_numpy(metric):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200, 8)).astype(np.float32)
    q = rng.standard_normal((7, 8)).astype(np.float32)
    scores, ids = build_index(v, kind="exact", metric=metric).search(q, 10)
    ref_s, ref_i = numpy_topk(v, q, 10, metric)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-4)


def test_exact_ties_and_short_catalogue():
    v = np.array([[1.0, 0], [1.0, 0], [0, 1.0]], np.float32)  # items 0 and 1 tie
    scores, ids = ExactIndex(v).search(np.array([1.0, 0], np.float32), 5)
    assert ids.tolist() == [[0, 1, 2, -1, -1]]  # lower id first; missing slots are -1 / -inf
    assert np.isinf(scores[0, 3:]).all() and scores[0, 0] == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
def test_faiss_kinds_recall_against_exact(kind, clustered, tmp_path):
    v, q = clustered
    cfg = IndexConfig(kind=kind, nlist=16, nprobe=8, hnsw_m=16, ef_construction=64, ef_search=64,
                      pq_m=4, pq_bits=4)  # small codes: PQ training is the slow part
    index = build_index(v, cfg)
    _, truth = build_index(v, kind="exact").search(q, 20)
    scores, ids = index.search(q, 20)
    floor = {"flat": 1.0, "hnsw": 0.95, "ivf_flat": 0.9, "ivf_pq": 0.25}[kind]
    assert recall_at_k(ids, truth) >= floor
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # save / load round trip gives identical answers, and writes no pickle
    index.save(tmp_path / kind)
    files = sorted(p.name for p in (tmp_path / kind).iterdir())
    assert files == ["index.faiss", "index.json"]
    again = load_index(tmp_path / kind)
    s2, i2 = again.search(q, 20)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_allclose(s2, scores, rtol=1e-6)


def test_search_params_change_recall(clustered):
    v, q = clustered
    index = build_index(v, kind="ivf_flat", nlist=32, nprobe=1)
    _, truth = build_index(v, kind="exact").search(q, 50)
    low = recall_at_k(index.search(q, 50)[1], truth)
    index.set_search_params(nprobe=32)
    assert recall_at_k(index.search(q, 50)[1], truth) == pytest.approx(1.0)
    assert low < 1.0
    with pytest.raises(ValueError, match="unknown search parameter"):
        index.set_search_params(efsearch=3)


def test_exact_save_load(tmp_path):
    v = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    ix = build_index(v, kind="exact")
    ix.save(tmp_path / "e")
    again = load_index(tmp_path / "e")
    assert isinstance(again, ExactIndex) and again.ntotal == 50
    np.testing.assert_array_equal(again.search(v[:3], 4)[1], ix.search(v[:3], 4)[1])


def test_bad_input_is_reported(tmp_path):
    v = np.ones((10, 4), np.float32)
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="annoy")
    with pytest.raises(ValueError, match="unknown index option"):
        IndexConfig.from_dict({"kind": "hnsw", "efsearch": 5})
    ix = build_index(v, kind="flat")
    with pytest.raises(ValueError, match="dimension 3"):
        ix.search(np.ones(3, np.float32), 2)
    with pytest.raises(ValueError, match="k must be"):
        ix.search(np.ones(4, np.float32), 0)
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((3, 4), np.nan, np.float32), kind="flat")
    with pytest.raises(ValueError, match="divide"):
        build_index(np.ones((300, 6), np.float32), kind="ivf_pq", pq_m=4)
    with pytest.raises(FileNotFoundError, match="index.json"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_index(tmp_path)


def test_recall_at_k_by_hand():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 9, 1], [7, 8, 9]])
    assert recall_at_k(approx, exact) == pytest.approx(2 / 6)


def test_embedding_tables_reproduce_model_scores():
    rng = np.random.default_rng(0)
    data = from_raw(rng.integers(0, 30, 400), rng.integers(0, 25, 400))
    for params in ({"use_bias": True, "normalize": False, "loss": "bpr"}, {"normalize": True}):
        mf = MF(dim=8, epochs=1, device="cpu", progress=False, n_negatives=4, **params).fit(data)
        users, items = embedding_tables(mf)
        with torch.no_grad():
            expected = mf.score_all(torch.arange(data.n_users)).numpy()
        np.testing.assert_allclose(users @ items.T, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(item_vectors(mf), items)
    with pytest.raises(TypeError, match="no user/item embeddings"):
        item_vectors(ItemKNN(k=5, device="cpu").fit(data))


def test_bench_reports_exact_first(clustered):
    v, q = clustered
    rows = bench_indexes(v, q[:20], [IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=40)], k=10,
                         sweep={"ef_search": [16, 64]}, exact_latency_queries=5, log=lambda m: None)
    assert [r.kind for r in rows] == ["exact", "hnsw", "hnsw"]
    assert rows[0].recall == 1.0 and rows[2].params["ef_search"] == 64
    assert rows[2].recall >= rows[1].recall


def test_cli_index_bench(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["index", "bench", "--n-items", "2000", "--dim", "8", "--n-queries", "20",
                                   "--k", "10", "--kinds", "hnsw,ivf_flat", "--clusters", "20",
                                   "--ef-search", "32", "--nprobe", "4", "--nlist", "16",
                                   "--exact-queries", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["kind"] for r in result["rows"]] == ["exact", "hnsw", "ivf_flat"]
    assert all(0 <= r["recall"] <= 1 for r in result["rows"])
    assert json.loads(out.read_text()) == result
    bad = CliRunner().invoke(app, ["index", "bench", "--n-items", "100", "--kinds", "annoy"])
    assert bad.exit_code == 2 and "annoy" in bad.output


def test_exact_index_needs_no_faiss_and_faiss_kinds_say_what_is_missing(monkeypatch, tmp_path):
    import sys

    import numpy as np
    import pytest

    from recstack.index import build_index, load_index

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    monkeypatch.delitem(sys.modules, "recstack.index.faiss_index", raising=False)
    v = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    idx = build_index(v, kind="exact")
    idx.save(tmp_path / "exact")
    assert load_index(tmp_path / "exact").ntotal == 50
    with pytest.raises(ImportError, match="Faiss; kind='exact'.*needs the 'index' extra"):
        build_index(v, kind="hnsw")
