"""Index benchmark: recall@K against exact search and single-query latency, on a synthetic
clustered catalogue (what `recstack index bench` and benchmarks/bench_index.py run)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from recstack.index.base import VectorIndex
from recstack.index.config import IndexConfig
from recstack.index.factory import build_index


def synthetic_catalogue(n: int, dim: int, n_clusters: int = 1000, spread: float = 0.7,
                        seed: int = 0, centers_seed: int = 0) -> np.ndarray:
    """L2-normalised float32 [n, dim] vectors from a Gaussian mixture with Zipf-sized clusters.

    Embeddings of real catalogues are clustered (genres, topics) with a few big clusters and many
    small ones; uniform noise would make every neighbour list arbitrary. Vectors are
    `center + spread * noise` (both with unit expected norm), normalised. Queries drawn with the
    same `centers_seed` and another `seed` come from the same mixture.
    """
    if n < 1 or dim < 1 or n_clusters < 1:
        raise ValueError(f"need n, dim, n_clusters >= 1, got {n}, {dim}, {n_clusters}")
    centers = np.random.default_rng(centers_seed).standard_normal((n_clusters, dim), dtype=np.float32)
    centers /= np.sqrt(dim)
    rng = np.random.default_rng(seed + 1)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    owner = rng.choice(n_clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), np.float32)
    step = 1 << 18  # bounded temporaries
    for s in range(0, n, step):
        e = min(n, s + step)
        x = rng.standard_normal((e - s, dim), dtype=np.float32)
        x *= spread / np.sqrt(dim)
        x += centers[owner[s:e]]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


@dataclass
class BenchRow:
    """One index configuration's figures."""

    kind: str
    params: dict
    build_seconds: float
    recall: float  # mean |approx top-k & exact top-k| / k
    k: int
    latency_ms_p50: float  # one query at a time (batch 1)
    latency_ms_mean: float
    latency_ms_p99: float
    speedup_vs_exact: float | None = None  # exact mean latency / this mean latency


def single_query_latency(index: VectorIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Seconds of each `search` call with one query (after two warm-up calls)."""
    for q in queries[:2]:
        index.search(q, k)
    out = np.empty(len(queries))
    for j, q in enumerate(queries):
        t0 = time.perf_counter()
        index.search(q, k)
        out[j] = time.perf_counter() - t0
    return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k row found in the same approximate row (vectorised:
    row-offset keys make one sorted array, searched once)."""
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"{approx.shape[0]} approximate rows vs {exact.shape[0]} exact rows")
    span = int(max(approx.max(initial=0), exact.max(initial=0))) + 2  # ids >= -1
    rows = np.arange(len(exact), dtype=np.int64)[:, None] * span
    keys = np.sort(approx.astype(np.int64) + 1 + rows, axis=1).ravel()
    want = (exact.astype(np.int64) + 1 + rows).ravel()
    pos = np.clip(np.searchsorted(keys, want), 0, len(keys) - 1)
    found = (keys[pos] == want) & (exact.ravel() >= 0)
    return float(found.sum() / max(1, (exact >= 0).sum()))


def _row(kind: str, params: dict, build_s: float, recall: float, k: int, lat: np.ndarray) -> BenchRow:
    ms = lat * 1e3
    return BenchRow(kind, params, round(build_s, 3), round(recall, 4), k, round(float(np.median(ms)), 4),
                    round(float(ms.mean()), 4), round(float(np.percentile(ms, 99)), 4))


def bench_indexes(vectors: np.ndarray, queries: np.ndarray, configs: Sequence[IndexConfig],
                  k: int = 100, sweep: dict[str, Sequence[int]] | None = None,
                  exact_latency_queries: int = 100, log=print) -> list[BenchRow]:
    """Build each config once and measure it (for every value of the sweep, e.g.
    ``{"ef_search": [64, 128, 256], "nprobe": [8, 32]}`` applied to indexes that have it).

    The first row is always exact search: its top-k is the ground truth for recall, and its
    single-query latency (over `exact_latency_queries` queries) the base of `speedup_vs_exact`.
    """
    sweep = sweep or {}
    t0 = time.perf_counter()
    exact = build_index(vectors, IndexConfig(kind="exact"))
    exact_build = time.perf_counter() - t0
    _, truth = exact.search(queries, k)
    lat = single_query_latency(exact, queries[:exact_latency_queries], k)
    rows = [_row("exact", {}, exact_build, 1.0, k, lat)]
    rows[0].speedup_vs_exact = 1.0
    base = rows[0].latency_ms_mean
    log(f"exact: {base:.3f} ms/query")
    for cfg in configs:
        if cfg.kind == "exact":
            continue
        t0 = time.perf_counter()
        index = build_index(vectors, cfg)
        build_s = time.perf_counter() - t0
        log(f"{cfg.kind}: built in {build_s:.1f} s")
        knob = {"hnsw": "ef_search", "ivf_flat": "nprobe", "ivf_pq": "nprobe"}.get(cfg.kind)
        values = list(sweep.get(knob, [getattr(cfg, knob)])) if knob else [None]
        for v in values:
            if knob:
                index.set_search_params(**{knob: v})
            _, got = index.search(queries, k)
            rec = recall_at_k(got, truth)
            lat = single_query_latency(index, queries, k)
            params = {p: getattr(cfg, p) for p in _PARAMS[cfg.kind]}
            row = _row(cfg.kind, params, build_s, rec, k, lat)
            row.speedup_vs_exact = round(base / max(row.latency_ms_mean, 1e-9), 1)
            log(f"  {params}: recall@{k}={rec:.4f}, {row.latency_ms_mean:.3f} ms/query, "
                f"{row.speedup_vs_exact}x faster than exact")
            rows.append(row)
    return rows


_PARAMS = {
    "flat": ("metric",),
    "hnsw": ("metric", "hnsw_m", "ef_construction", "ef_search"),
    "ivf_flat": ("metric", "nlist", "nprobe"),
    "ivf_pq": ("metric", "nlist", "nprobe", "pq_m", "pq_bits"),
}


def rows_as_dicts(rows: Sequence[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def run_bench(n_items: int = 100_000, dim: int = 64, n_queries: int = 1000, k: int = 100,
              kinds: Sequence[str] = ("hnsw", "ivf_flat", "ivf_pq"), clusters: int = 1000,
              base: IndexConfig | None = None, sweep: dict[str, Sequence[int]] | None = None,
              exact_latency_queries: int = 100, seed: int = 0, log=print) -> dict:
    """The whole benchmark on a synthetic catalogue -> a JSON-able dict (rows + setup)."""
    import os

    import torch

    from recstack.optional import require

    faiss = require("faiss", "index", "recstack index bench")

    base = base or IndexConfig()
    t0 = time.perf_counter()
    vectors = synthetic_catalogue(n_items, dim, clusters, seed=seed, centers_seed=seed)
    queries = synthetic_catalogue(n_queries, dim, clusters, seed=seed + 1000, centers_seed=seed)
    log(f"catalogue: {n_items:,} x {dim} ({clusters} clusters), {n_queries} queries, "
        f"generated in {time.perf_counter() - t0:.1f} s")
    configs = [IndexConfig.from_dict({**base.to_dict(), "kind": kind}) for kind in kinds]
    rows = bench_indexes(vectors, queries, configs, k, sweep, exact_latency_queries, log)
    return {
        "setup": {"n_items": n_items, "dim": dim, "clusters": clusters, "n_queries": n_queries, "k": k,
                  "seed": seed, "metric": base.metric, "torch_threads": torch.get_num_threads(),
                  "faiss_threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
                  "loadavg_1_5_15": list(os.getloadavg()),
                  "latency": "one query per search call (batch 1), after 2 warm-up calls"},
        "rows": rows_as_dicts(rows),
    }
