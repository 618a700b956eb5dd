"""Out-of-core `prepare_streaming` on bad input (issue 22): it rejects what the in-memory readers
reject, with a DataError naming the file, the line (row) and the field, and compares timestamps
as numbers."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recstack.data.errors import DataError
from recstack.data.readers import load
from recstack.data.streaming import prepare_streaming


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _part(out: Path, name: str) -> list[tuple]:
    df = pl.read_parquet(out / f"{name}.parquet")
    return sorted(zip(df["user_id"].to_list(), df["item_id"].to_list(), strict=True))


# ---- defect 1: an empty user/item id is an error, as in the reader -----------------------------
@pytest.mark.parametrize("text, line, field", [
    ("user,item,timestamp\n1,10,1\n,11,2\n1,12,3\n2,10,4\n", 3, "user"),  # integer ids
    ("user,item,timestamp\na,x,1\nb,y,2\na,,3\nb,z,4\n", 4, "item"),  # text ids
    ("user,item,timestamp\na,x,1\n  ,y,2\na,z,3\n", 3, "user"),  # blank after stripping
])
def test_streaming_prepare_rejects_empty_ids_like_the_reader(tmp_path, text, line, field):
    f = _write(tmp_path / "log.csv", text)
    with pytest.raises(DataError) as reader:
        load(f"csv:{f}")
    with pytest.raises(DataError) as streaming:
        prepare_streaming(f, tmp_path / "out")
    for e in (reader.value, streaming.value):
        assert (e.path, e.line, e.field) == (str(f), line, field)
    assert str(streaming.value) == str(reader.value)  # the same one line
    assert not (tmp_path / "out" / "_stage.parquet").exists()


def test_streaming_prepare_rejects_null_ids_in_parquet(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": ["a", None, "b"], "item": [1, 2, 3], "timestamp": [1, 2, 3]}).write_parquet(f)
    with pytest.raises(DataError, match=r"log\.parquet, field 'user': data row 2: missing value"):
        prepare_streaming(f, tmp_path / "out")


def test_streaming_prepare_rejects_blank_text_ids_in_parquet(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": ["a", "b", "a"], "item": ["x", "", "y"], "timestamp": [1, 2, 3]}).write_parquet(f)
    with pytest.raises(DataError) as reader:
        load(f"parquet:{f}")
    with pytest.raises(DataError, match=r"log\.parquet, field 'item': data row 2: missing value"):
        prepare_streaming(f, tmp_path / "out")
    assert "row 2: missing value" in str(reader.value)


def test_streaming_prepare_rejects_a_bad_timestamp(tmp_path):
    f = _write(tmp_path / "log.csv", "user,item,timestamp\n1,10,5\n1,11,x\n1,12,7\n")
    with pytest.raises(DataError) as e:
        prepare_streaming(f, tmp_path / "out")
    assert (e.value.path, e.value.line, e.value.field) == (str(f), 3, "timestamp")
    assert "expected a finite number, got 'x'" in str(e.value)


def test_streaming_prepare_late_bad_value_is_located(tmp_path):
    rows = "".join(f"{i % 50},{i % 70},{i}\n" for i in range(12_000))  # past polars' type sniffing
    f = _write(tmp_path / "log.csv", "user,item,timestamp\n" + rows + "7,8,abc\n")
    with pytest.raises(DataError) as e:
        prepare_streaming(f, tmp_path / "out")
    assert (e.value.line, e.value.field) == (12_002, "timestamp")


def test_streaming_prepare_trailing_blank_lines_are_not_rows(tmp_path):
    f = _write(tmp_path / "log.csv", "user,item,timestamp\n1,10,1\n1,11,2\n\n\n")
    assert prepare_streaming(f, tmp_path / "out")["input_rows"] == 2 == len(load(f"csv:{f}"))


# ---- defect 2: timestamps compare as numbers ("9" < "10") -------------------------------------
def _digits_case() -> dict[str, list]:
    # user 1: the latest is 100 (3 digits), then 10; as strings "9" would be the latest
    return {"user": [1, 1, 1, 1, 2, 2], "item": [10, 11, 12, 13, 10, 11],
            "timestamp": ["9", "100", "10", "8", "99", "1000"]}


def test_streaming_prepare_orders_text_timestamps_numerically_parquet(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame(_digits_case()).write_parquet(f)  # a String timestamp column
    prepare_streaming(f, tmp_path / "out")
    assert _part(tmp_path / "out", "test") == [(1, 11), (2, 11)]
    assert _part(tmp_path / "out", "valid") == [(1, 12)]
    assert pl.read_parquet(tmp_path / "out" / "test.parquet")["timestamp"].dtype == pl.Int64


def test_streaming_prepare_orders_text_timestamps_numerically_csv(tmp_path):
    c = _digits_case()
    # padded fields make polars read the column as text
    lines = [f"{u},{i}, {t}" for u, i, t in zip(c["user"], c["item"], c["timestamp"], strict=True)]
    f = _write(tmp_path / "log.csv", "user,item,timestamp\n" + "\n".join(lines) + "\n")
    prepare_streaming(f, tmp_path / "out")
    assert _part(tmp_path / "out", "test") == [(1, 11), (2, 11)]
    assert _part(tmp_path / "out", "valid") == [(1, 12)]


def test_streaming_prepare_float_text_timestamps(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": [1, 1, 1], "item": [1, 2, 3],
                  "timestamp": ["9.5", "10.25", "1e1"]}).write_parquet(f)
    prepare_streaming(f, tmp_path / "out", valid=False)
    assert _part(tmp_path / "out", "test") == [(1, 2)]


# ---- defect 3: a k-core that removes every row is an error -------------------------------------
def test_streaming_prepare_empty_kcore_is_an_error(tmp_path):
    f = _write(tmp_path / "log.csv", "user,item,timestamp\n1,10,1\n2,11,2\n1,11,3\n")
    with pytest.raises(DataError, match=r"log\.csv: k-core\(user>=5,item>=5\) removed all 3 "
                                        r"interactions; lower kcore$"):
        prepare_streaming(f, tmp_path / "out", kcore=5)
    assert not (tmp_path / "out" / "split.json").exists()


# ---- defect 4: UInt64 / list columns and truncated gzip: one DataError line --------------------
def test_streaming_prepare_uint64_ids_beyond_int64(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": pl.Series([1, 2**63 + 5], dtype=pl.UInt64), "item": [1, 2],
                  "timestamp": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError, match=r"log\.parquet, field 'user': data row 2: id "
                                        r"'9223372036854775813' does not fit"):
        prepare_streaming(f, tmp_path / "out")


def test_streaming_prepare_list_column(tmp_path):
    f = tmp_path / "log.parquet"
    pl.DataFrame({"user": [1, 2], "item": [[1], [2, 3]], "timestamp": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError, match=r"log\.parquet, field 'item': column type List"):
        prepare_streaming(f, tmp_path / "out")


def test_streaming_prepare_truncated_gzip(tmp_path):
    raw = gzip.compress(b"user,item,timestamp\n" + b"".join(f"{i},{i % 7},{i}\n".encode()
                                                           for i in range(5000)))
    f = tmp_path / "log.csv.gz"
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"log\.csv\.gz, line \d+: truncated gzip file"):
        prepare_streaming(f, tmp_path / "out")
    f.write_bytes(raw)
    assert prepare_streaming(f, tmp_path / "out")["input_rows"] == 5000


# ---- fuzz: a DataError naming the file, or every input row accounted for -----------------------
_CELL = st.one_of(st.integers(-5, 30).map(str), st.integers(-(2**70), 2**70).map(str),
                  st.sampled_from(["", " ", "x", "1.5", "inf", '"', '"a"', '"a,b"', "\t", "é"]))


@st.composite
def _csv(draw: st.DrawFn) -> tuple[bytes, int]:
    """CSV bytes (some rows ragged, quotes, junk) and the number of input rows."""
    ncol = draw(st.sampled_from([2, 3]))
    rows = [",".join(draw(st.lists(_CELL, min_size=max(ncol + d, 0), max_size=max(ncol + d, 0))))
            for d in draw(st.lists(st.sampled_from([0, 0, 0, -1, 1]), max_size=10))]
    nonblank = [k for k, r in enumerate(rows) if r.strip()]
    tail = draw(st.sampled_from(["", "\n", "\n\n"]))
    text = "\n".join([",".join(["user", "item", "timestamp"][:ncol]), *rows]) + tail
    return text.encode(), (nonblank[-1] + 1 if nonblank else 0)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=_csv(), gz=st.sampled_from([None, 1.0, 0.6]))
def test_fuzz_streaming_prepare(tmp_path, case, gz):
    raw, n_rows = case
    f = tmp_path / ("log.csv.gz" if gz else "log.csv")
    if gz:
        z = gzip.compress(raw, mtime=0)
        raw = z[: int(len(z) * gz)]
    f.write_bytes(raw)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    try:
        summary = prepare_streaming(f, out, time_col="timestamp" if b"timestamp" in raw[:40] else None)
    except DataError as e:
        assert str(f) in str(e) and "\n" not in str(e), str(e)
        return
    assert summary["input_rows"] == n_rows
