"""Fuzz the file readers (issue 22) with random malformed CSV / TSV / gzip / Parquet input.

Property: `load` either raises a DataError whose message names the file, or returns exactly one
interaction per input row (the readers drop nothing: there is no count of dropped rows to add).
Input rows of a text file are its lines after the header, up to the last non-blank line (blank
lines at the end are not rows, by the readers' policy).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recstack.data.errors import DataError
from recstack.data.readers import load

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# cells: well-formed values, near misses and junk; never a line break (lines are the rows)
_CELL = st.one_of(
    st.integers(-5, 50).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", " ", "  7 ", "007", "+3", "1.5", "1e3", "nan", "inf", "-inf", "x", "u1",
                     '"', '""', '"a"', '"a,b"', "a\tb", "é", "\udcff", "\r", "null", "NA"]),
    st.text(alphabet=st.sampled_from('ab7 ,;\t".-é\udcff'), max_size=6),
)
_HEADERS = [["user", "item"], ["user", "item", "rating"], ["user", "item", "rating", "timestamp"],
            ["userId", "movieId", "timestamp"]]


@st.composite
def _table(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header and rows of cells; some rows are ragged (too few / too many cells)."""
    header = draw(st.sampled_from(_HEADERS))
    n = draw(st.integers(0, 12))
    rows = []
    for _ in range(n):
        k = len(header) + draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1, -len(header)]))
        rows.append([draw(_CELL) for _ in range(max(k, 0))])
    return header, rows


def _text_file(header: list[str], rows: list[list[str]], sep: str, crlf: bool, tail: str
               ) -> tuple[bytes, int]:
    """File bytes and the number of input rows (lines after the header up to the last non-blank)."""
    lines = [sep.join(r) for r in rows]
    nonblank = [k for k, line in enumerate(lines) if line.strip()]
    n_rows = nonblank[-1] + 1 if nonblank else 0
    eol = "\r\n" if crlf else "\n"
    text = eol.join([sep.join(header), *lines]) + tail
    return text.encode("utf-8", "surrogateescape"), n_rows


def _check(path: Path, spec: str, n_rows: int) -> None:
    try:
        data = load(spec)
    except DataError as e:
        msg = str(e)
        assert str(path) in msg, msg
        assert "\n" not in msg.strip(), msg  # one line
        return
    assert len(data) == n_rows, (spec, n_rows, len(data))


@FUZZ
@given(table=_table(), sep=st.sampled_from([",", "\t"]), crlf=st.booleans(),
       tail=st.sampled_from(["", "\n", "\n\n", "\n \n"]))
# found by this test: a quote opened on one line and closed on the next merged two rows into one
@example(table=(["user", "item"], [["0", '"'], ["0", '"']]), sep=",", crlf=False, tail="")
def test_fuzz_delimited_text(tmp_path, table, sep, crlf, tail):
    header, rows = table
    raw, n_rows = _text_file(header, rows, sep, crlf, tail)
    path = tmp_path / ("fuzz.tsv" if sep == "\t" else "fuzz.csv")
    path.write_bytes(raw)
    _check(path, f"csv:{path}?sep={'tab' if sep == chr(9) else 'comma'}", n_rows)


@FUZZ
@given(table=_table(), cut=st.one_of(st.none(), st.floats(0, 1)), flip=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzz_gzip(tmp_path, table, cut, flip):
    header, rows = table
    raw, n_rows = _text_file(header, rows, ",", False, "\n")
    gz = bytearray(gzip.compress(raw, mtime=0))
    if flip is not None:  # one corrupt byte anywhere (header, deflate data, CRC / length)
        k = int(flip * (len(gz) - 1))
        gz[k] ^= 0x5A
    if cut is not None:  # cut short
        gz = gz[: int(cut * (len(gz) - 1))]
    path = tmp_path / "fuzz.csv.gz"
    path.write_bytes(bytes(gz))
    _check(path, f"csv:{path}", n_rows)


_PARQUET_COLS = {
    "int": st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1),
    "uint": st.lists(st.integers(0, 2**64 - 1), min_size=1).map(lambda v: pl.Series(v, dtype=pl.UInt64)),
    "float": st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1),
    "text": st.lists(st.sampled_from(["a", "", " ", "7", "1.5", "x y", "nan"]), min_size=1),
    "null": st.lists(st.one_of(st.none(), st.integers(0, 9)), min_size=1),
    "list": st.lists(st.lists(st.integers(0, 9), max_size=2), min_size=1),
    "bool": st.lists(st.booleans(), min_size=1),
}


@st.composite
def _parquet_frame(draw: st.DrawFn) -> pl.DataFrame:
    names = draw(st.sampled_from(_HEADERS))
    n = draw(st.integers(0, 8))
    cols = {}
    for name in names:
        kind = draw(st.sampled_from(list(_PARQUET_COLS)))
        values = draw(_PARQUET_COLS[kind])
        reps = (n // max(len(values), 1)) + 1
        s = pl.Series(name, values) if not isinstance(values, pl.Series) else values.alias(name)
        cols[name] = pl.concat([s] * reps)[:n] if n else s[:0]
    return pl.DataFrame(cols)


@FUZZ
@given(df=_parquet_frame(), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzz_parquet(tmp_path, df, cut):
    path = tmp_path / "fuzz.parquet"
    df.write_parquet(path)
    if cut is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * (len(raw) - 1))])
    _check(path, f"parquet:{path}", df.height)
