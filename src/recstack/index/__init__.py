"""Vector indexes for retrieval: exact (torch) and Faiss Flat / IVF-Flat / HNSW / IVF-PQ behind
one interface (`VectorIndex`: search, save, load), built from any embedding model's items."""

from recstack.index.base import VectorIndex
from recstack.index.bench import BenchRow, bench_indexes, recall_at_k, synthetic_catalogue
from recstack.index.config import IndexConfig
from recstack.index.embeddings import embedding_tables, item_vectors
from recstack.index.exact import ExactIndex
from recstack.index.factory import build_index, load_index

__all__ = [
    "IndexConfig", "VectorIndex", "ExactIndex", "FaissIndex", "build_index", "load_index",
    "embedding_tables", "item_vectors", "synthetic_catalogue", "bench_indexes", "recall_at_k",
    "BenchRow",
]


def __getattr__(name: str):
    # Faiss is imported only when a Faiss index is asked for: the exact index works without it
    if name == "FaissIndex":
        from recstack.index.faiss_index import FaissIndex

        return FaissIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
