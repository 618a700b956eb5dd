"""Faiss index files any Faiss program can read.

Every Faiss kind of recstack index (flat, ivf_flat, hnsw, ivf_pq) is saved with
``faiss.write_index`` as ``<index dir>/index.faiss``: plain ``faiss.read_index`` loads it and
searches it exactly as recstack does, with two conventions to mirror:

* HNSW: recstack raises ``efSearch`` to ``k`` when it is smaller (a shorter candidate list cannot
  fill k slots); the file stores ``ef_search`` (and IVF files ``nprobe``) as configured.
* metric "l2": Faiss returns squared distances (lower = better); recstack returns their
  negatives as scores (higher = better). Missing slots: Faiss id -1, recstack score -inf.

The exact index is not a Faiss index (``vectors.safetensors``, searched with torch);
:func:`write_faiss_index` writes the equivalent ``IndexFlatIP`` / ``IndexFlatL2`` for it (and
copies the file of a Faiss kind), to a path of your choice: inside a serving bundle, write it
outside the bundle (its manifest lists every file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from recstack.export.parts import ExportError

__all__ = ["write_faiss_index"]


def write_faiss_index(index_dir: str | Path, out: str | Path) -> Path:
    """A standard Faiss index file at `out` for the recstack index saved in `index_dir`.

    Returns:
        The written path.

    Raises:
        ExportError: `index_dir` is not a saved recstack index.
        MissingExtra: Faiss is not installed (names the 'index' extra).
    """
    from recstack.optional import require

    faiss = require("faiss", "index", "writing a Faiss index file")
    from recstack.index.base import read_meta
    from recstack.index.config import IndexConfig

    index_dir, out = Path(index_dir), Path(out)
    try:
        meta = read_meta(index_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ExportError(str(e)) from None
    config = IndexConfig.from_dict(meta["config"])
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.kind != "exact":
        src = index_dir / "index.faiss"
        if src.resolve() != out.resolve():
            shutil.copyfile(src, out)
        return out
    import numpy as np
    from safetensors.numpy import load_file

    vectors = np.ascontiguousarray(load_file(str(index_dir / "vectors.safetensors"))["vectors"], np.float32)
    flat = faiss.IndexFlatIP(vectors.shape[1]) if config.metric == "ip" else faiss.IndexFlatL2(vectors.shape[1])
    flat.add(vectors)
    faiss.write_index(flat, str(out))
    return out
