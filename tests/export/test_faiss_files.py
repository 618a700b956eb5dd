"""Faiss interop: the index files recstack writes load in plain Faiss and search the same;
`write_faiss_index` gives the exact index a standard Faiss file too."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.export import ExportError, write_faiss_index
from recstack.index import build_index, load_index
from recstack.index.bench import synthetic_catalogue

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Tiny indexes: OpenMP threads only contend for the CPU (and slow everything down)."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture(scope="module")
def vectors():
    return synthetic_catalogue(1000, 16, n_clusters=20, seed=1)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_plain_faiss_reads_recstack_index_files(kind, metric, vectors, tmp_path):
    opts = {"nlist": 16, "nprobe": 4, "pq_m": 4, "pq_bits": 4, "ef_search": 16} if kind != "flat" else {}
    index = build_index(vectors, kind=kind, metric=metric, **opts)
    index.save(tmp_path / "ix")
    queries = synthetic_catalogue(50, 16, n_clusters=20, seed=7)
    k = 20
    scores, ids = load_index(tmp_path / "ix").search(queries, k)

    plain = faiss.read_index(str(tmp_path / "ix" / "index.faiss"))  # no recstack involved
    assert (plain.ntotal, plain.d) == (len(vectors), 16)
    if kind == "hnsw":
        plain.hnsw.efSearch = max(plain.hnsw.efSearch, k)  # recstack's one search-time rule
    d, i = plain.search(queries, k)
    np.testing.assert_array_equal(i, ids)
    np.testing.assert_allclose(d if metric == "ip" else -d, scores, rtol=0, atol=1e-5)
    # the file is a copy away from any Faiss program
    assert write_faiss_index(tmp_path / "ix", tmp_path / "copy.faiss").read_bytes() == \
        (tmp_path / "ix" / "index.faiss").read_bytes()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_index_gets_a_standard_faiss_file(metric, vectors, tmp_path):
    index = build_index(vectors, kind="exact", metric=metric)
    index.save(tmp_path / "ix")
    out = write_faiss_index(tmp_path / "ix", tmp_path / "exact.faiss")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["index.json", "vectors.safetensors"]
    assert load_index(tmp_path / "ix").search(vectors[:1], 3)[1].shape == (1, 3)  # loader unchanged
    queries = synthetic_catalogue(50, 16, n_clusters=20, seed=7)
    scores, ids = index.search(queries, 10)
    d, i = faiss.read_index(str(out)).search(queries, 10)
    np.testing.assert_array_equal(i, ids)
    np.testing.assert_allclose(d if metric == "ip" else -d, scores, rtol=0, atol=1e-4)


def test_not_an_index(tmp_path):
    with pytest.raises(ExportError, match="not a saved recstack index"):
        write_faiss_index(tmp_path, tmp_path / "x.faiss")
