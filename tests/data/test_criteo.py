"""Criteo TSV reader/writer (chunked, bounded memory, precise errors) and the synthetic generator."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recstack.data.criteo import (
    CAT_COLUMNS,
    COLUMNS,
    INT_COLUMNS,
    iter_criteo,
    read_criteo,
    write_criteo,
)
from recstack.data.errors import DataError
from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig
from recstack.evaluation.pointwise import auc

SMALL = SyntheticCTRConfig(cardinalities=(50, 1000, 7, 20000) * 6 + (3, 100), seed=3)


def line(label="1", ints=None, cats=None):
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *ints, *cats])


def test_read_exact_values_missing_and_no_final_newline(tmp_path):
    ints = ["5", "", "-1"] + ["0"] * 10
    cats = ["68fd1e64", ""] + ["aaaaaaaa"] * 24
    p = tmp_path / "c.tsv"
    p.write_text(line() + "\n" + line("0", ints, cats))  # no newline at the end
    df = read_criteo(p)
    assert df.columns == COLUMNS and df.height == 2
    assert df["label"].to_list() == [1, 0]
    assert df["I1"].to_list() == [0, 5] and df["I2"].to_list() == [1, None] and df["I3"].to_list() == [2, -1]
    assert df["C1"].to_list() == ["00000000", "68fd1e64"] and df["C2"].to_list() == ["00000001", None]


def test_chunks_cross_block_boundaries_and_roundtrip(tmp_path):
    gen = SyntheticCTR(SMALL)
    p = tmp_path / "s.tsv"
    assert write_criteo(p, gen.frames(2500, chunk_rows=1000)) == 2500
    chunks = list(iter_criteo(p, chunk_rows=700, block_bytes=4096))  # many reads per chunk
    assert [c.height for c in chunks] == [700, 700, 700, 400]
    assert pl.concat(chunks).equals(pl.concat(list(gen.frames(2500, chunk_rows=1000))))
    assert [c.height for c in iter_criteo(p, chunk_rows=1000, max_rows=1500)] == [1000, 500]


@pytest.mark.parametrize("text,line_no,field,msg", [
    (line() + "\n" + line()[:-9] + "\n", 2, None, "expected 40 tab-separated fields.*found 39"),
    (line() + "\n" + line() + "\t\n", 2, None, "found 41"),
    (line() + "\n" + line() + "\n" + line(ints=["1", "x2"] + ["0"] * 11) + "\n", 3, "I2", "'x2' is not an integer"),
    (line("2") + "\n", 1, "label", "'2' is not a 0/1 label"),
    (line("") + "\n", 1, "label", "is not a 0/1 label"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, text, line_no, field, msg):
    p = tmp_path / "bad.tsv"
    p.write_text(text)
    with pytest.raises(DataError, match=msg) as e:
        read_criteo(p)
    assert e.value.path == str(p) and e.value.line == line_no and e.value.field == field


def test_line_numbers_count_across_chunks(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text((line() + "\n") * 5 + line(ints=["1"] * 12 + ["z"]) + "\n")
    with pytest.raises(DataError) as e:
        list(iter_criteo(p, chunk_rows=2))
    assert e.value.line == 6 and e.value.field == "I13"


def test_generator_is_seeded_and_chunks_are_independent():
    a, b = SyntheticCTR(SMALL), SyntheticCTR(SMALL)
    assert a.frame(300, chunk=4).equals(b.frame(300, chunk=4))
    assert not a.frame(300, chunk=4).equals(a.frame(300, chunk=5))
    other = SyntheticCTR(SyntheticCTRConfig(cardinalities=SMALL.cardinalities, seed=4))
    assert not other.frame(300, chunk=4).equals(a.frame(300, chunk=4))
    df = a.frame(300)
    assert df.columns == COLUMNS and df["C1"].str.len_chars().max() == 8
    assert all(df[c].dtype == pl.Int64 for c in INT_COLUMNS) and all(df[c].dtype == pl.String for c in CAT_COLUMNS)


def test_power_law_planted_signal_and_base_rate():
    gen = SyntheticCTR(SMALL)
    s = gen.sample(40000)
    assert abs(s["label"].mean() - SMALL.base_rate) < 0.03
    # field 3 has 20,000 categories: a power law puts a large share on the top few
    r = s["sparse"][:, 3]
    counts = np.sort(np.bincount(r[r >= 0]))[::-1]
    assert counts[0] / counts.sum() > 0.05 and counts[:10].sum() / counts.sum() > 0.2
    assert (r[r >= 0] < SMALL.cardinalities[3]).all()
    assert auc(s["label"], s["logit"]) > 0.8  # the planted logit separates clicks
