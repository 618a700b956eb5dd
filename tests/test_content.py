"""Item texts for the content encoder (the encoder itself needs the optional model package)."""

from __future__ import annotations

import numpy as np

from recstack.content import encode_texts, item_texts
from recstack.data.readers import load


def test_item_texts_join_title_and_genres():
    data = load("embedded")
    texts = item_texts(data, fields=["title", "genres"])
    assert len(texts) == data.n_items
    i = int(np.flatnonzero(data.item_vocab.raw == 1)[0])  # movieId 1 = Toy Story (1995)
    assert texts[i].startswith("Toy Story (1995); genres: ") and "Animation" in texts[i]


def test_empty_texts_encode_to_zero_rows_and_cache(tmp_path):
    out = encode_texts(["", ""], cache_dir=tmp_path)
    assert out.shape == (2, 384) and not out.any()
    assert len(list(tmp_path.glob("content-*.npy"))) == 1
    np.testing.assert_array_equal(encode_texts(["", ""], cache_dir=tmp_path), out)
