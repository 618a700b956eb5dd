"""csv and parquet readers (`recstack.data.readers.delimited`): column mapping, id types, and
bad input whose error names the file, the line (row) and the field."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from reader_helpers import decoded, write

from recstack.data import DataError
from recstack.data.readers import load


# ------------------------------------------------------------------------------------------
# csv / parquet
# ------------------------------------------------------------------------------------------
def test_csv_roundtrip_options(tmp_path):
    f = write(tmp_path / "log.csv", "uid;iid;score;ts;extra\nu1;i9;4.5;100;x\nu2;i1;3;50;y\nu1;i1;1;70;z\n")
    d = load(f"csv:{f}?user=uid&item=iid&rating=score&timestamp=ts&sep=;")
    assert decoded(d) == (["u1", "u2", "u1"], ["i9", "i1", "i1"])
    assert d.rating.tolist() == [4.5, 3.0, 1.0] and d.timestamp.tolist() == [100, 50, 70]
    assert (d.name, d.fmt) == ("log", "csv")


def test_csv_default_names_weight_and_ints(tmp_path):
    f = write(tmp_path / "w.csv", "userId,movieId,weight,time\n10,7,0.5,1.5\n3,7,2,2\n")
    d = load(f"csv:{f}")
    assert decoded(d) == ([10, 3], [7, 7])
    assert d.weight.tolist() == [0.5, 2.0] and d.timestamp.dtype == np.float64 and d.rating is None
    assert d.user_vocab.raw.dtype == np.int64


def test_csv_headerless_and_id_type(tmp_path):
    f = write(tmp_path / "h.tsv", "007\t1\t5\n8\t2\t4\n")
    d = load(f"csv:{f}", sep="tab", header=False)
    assert decoded(d) == (["007", "8"], [1, 2])  # "007" is not a canonical int: kept as text
    assert d.rating.tolist() == [5.0, 4.0]
    d = load(f"csv:{f}?sep=tab&header=false&id_type=str")
    assert decoded(d)[1] == ["1", "2"]


def test_csv_late_text_id_falls_back_to_text(tmp_path):
    rows = "".join(f"{k},{k % 7}\n" for k in range(1500))
    f = write(tmp_path / "late.csv", "user,item\n" + rows + "abc,3\n")
    d = load(f"csv:{f}")
    assert len(d) == 1501 and decoded(d)[0][-1] == "abc" and decoded(d)[0][0] == "0"


def test_parquet_roundtrip(tmp_path):
    f = tmp_path / "p.parquet"
    pl.DataFrame({"user_id": ["a", "b", "a"], "item_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0],
                  "ts": [3, 2, 1]}).write_parquet(f)
    d = load(f"parquet:{f}")
    assert decoded(d) == (["a", "b", "a"], [5, 6, 5])
    assert d.timestamp.tolist() == [3, 2, 1] and (d.name, d.fmt) == ("p", "parquet")


def test_parquet_null_is_error(tmp_path):
    f = tmp_path / "n.parquet"
    pl.DataFrame({"user": [1, None], "item": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError) as e:
        load(f"parquet:{f}")
    assert "n.parquet" in str(e.value) and "row 2" in str(e.value) and "'user'" in str(e.value)


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
H = "user,item,rating,timestamp\n"
LONG_OK = "".join(f"{k},{k % 13},3,{k}\n" for k in range(1200))  # beyond the sniffed rows

BAD_CSV = [
    ("rating_text.csv", H + "1,2,3.0,10\n2,3,abc,11\n", 3, "rating"),
    ("ts_text.csv", H + "1,2,3,10\n3,4,5,2020-01-01\n", 3, "timestamp"),
    ("short_row.csv", H + "1,2,3,10\n2,3,4\n", 3, "timestamp"),
    ("long_row.csv", H + "1,2,3,10\n1,2,3,10\n2,3,4,5,6\n", 4, "#5"),
    ("empty_field.csv", H + "1,2,3,10\n2,,4,11\n", 3, "item"),
    ("blank_middle.csv", H + "1,2,3,10\n\n2,3,4,11\n", 3, None),
    ("nan_rating.csv", H + "1,2,nan,10\n", 2, "rating"),
    ("late_rating.csv", H + LONG_OK + "5,6,x,3\n", 1202, "rating"),
    ("late_short.csv", H + LONG_OK + "5,6,1\n", 1202, "timestamp"),
    ("empty.csv", "", 1, None),
    ("header_only.csv", H, 2, None),
]


@pytest.mark.parametrize(("name", "text", "line", "field"), BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv(tmp_path, name, text, line, field):
    f = write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        load(f"csv:{f}")
    msg = str(e.value)
    assert name in msg and f"line {line}" in msg, msg
    assert e.value.line == line
    if field is not None:
        assert f"field '{field}" in msg, msg


def test_bad_csv_missing_column(tmp_path):
    f = write(tmp_path / "cols.csv", "user,item\n1,2\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{f}?rating=score")
    assert "cols.csv" in str(e.value) and "line 1" in str(e.value) and "'score'" in str(e.value)
    g = write(tmp_path / "noitem.csv", "user,thing\n1,2\n")
    with pytest.raises(DataError, match=r"noitem.csv, line 1, field 'item'"):
        load(f"csv:{g}")


def test_bad_int_ids_when_required(tmp_path):
    f = write(tmp_path / "ids.csv", "user,item\n1,2\nx,3\n")
    with pytest.raises(DataError, match=r"ids.csv, line 3, field 'user'.*'x'"):
        load(f"csv:{f}", id_type="int")


def test_bad_csv_message_names_file_line_and_field(tmp_path):
    f = write(tmp_path / "semi.csv", "uid;iid;score\na;b;4\nc;d;lots\n")
    with pytest.raises(DataError, match=re.escape(
            f"{f}, line 3, field 'score': expected a finite number, got 'lots'")):
        load(f"csv:{f}?user=uid&item=iid&rating=score&sep=semicolon")


def test_bad_parquet_message_names_file_row_and_field(tmp_path):
    """parquet has no lines: the message names the file, the field and the row."""
    f = tmp_path / "bad.parquet"
    pl.DataFrame({"user": [1.0, 2.5], "item": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError, match=re.escape(f"{f}, field 'user': row 2: id 2.5 is not an integer")):
        load(f"parquet:{f}")
    g = tmp_path / "inf.parquet"
    pl.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, float("inf")]}).write_parquet(g)
    with pytest.raises(DataError, match=re.escape(f"{g}, field 'rating': row 2: expected a finite number")):
        load(f"parquet:{g}")


# ------------------------------------------------------------------------------------------
# issue 22: column types parquet can hold but ids / numbers cannot, broken gzip files
# ------------------------------------------------------------------------------------------
def test_parquet_uint64_ids(tmp_path):
    f = tmp_path / "u64.parquet"
    pl.DataFrame({"user": pl.Series([1, 2**63 + 5], dtype=pl.UInt64), "item": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError, match=re.escape(
            f"{f}, field 'user': row 2: 9223372036854775813 does not fit in a signed 64-bit integer "
            "(UInt64 column); pass id_type=str to read the ids as text")):
        load(f"parquet:{f}")
    d = load(f"parquet:{f}", id_type="str")
    assert decoded(d)[0] == ["1", "9223372036854775813"]
    g = tmp_path / "u64_small.parquet"  # UInt64 values that fit are plain integer ids
    pl.DataFrame({"user": pl.Series([7, 3], dtype=pl.UInt64), "item": [1, 2]}).write_parquet(g)
    assert decoded(load(f"parquet:{g}"))[0] == [7, 3]


def test_parquet_uint64_timestamp_beyond_int64(tmp_path):
    f = tmp_path / "ts64.parquet"
    pl.DataFrame({"user": [1, 2], "item": [1, 2],
                  "timestamp": pl.Series([5, 2**64 - 1], dtype=pl.UInt64)}).write_parquet(f)
    with pytest.raises(DataError, match=re.escape(f"{f}, field 'timestamp': row 2: 18446744073709551615 "
                                                  "does not fit in a signed 64-bit integer")):
        load(f"parquet:{f}")


@pytest.mark.parametrize("col, values", [
    ("item", [[1], [2, 3]]),
    ("user", [{"a": 1}, {"a": 2}]),
    ("rating", [[1.0], [2.0]]),
])
def test_parquet_nested_columns(tmp_path, col, values):
    f = tmp_path / "nested.parquet"
    cols: dict[str, list] = {"user": [1, 2], "item": [1, 2], "rating": [1.0, 2.0]}
    cols[col] = values
    pl.DataFrame(cols).write_parquet(f)
    with pytest.raises(DataError, match=re.escape(f"{f}, field '{col}': column type ") + r"(List|Struct)"):
        load(f"parquet:{f}")


def test_truncated_gzip_csv(tmp_path):
    import gzip

    body = "".join(f"{k},{k % 13},3\n" for k in range(5000))
    text = "user,item,rating\n" + body
    raw = gzip.compress(text.encode())
    f = tmp_path / "cut.csv.gz"
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        load(f"csv:{f}")
    msg = str(e.value)
    assert msg.startswith(f"{f}, line ") and "truncated gzip file" in msg and "\n" not in msg
    # the line the data breaks on: one past the complete lines the cut stream still holds
    import zlib

    whole = zlib.decompressobj(wbits=31).decompress(raw[: len(raw) // 2])
    assert e.value.line == whole.count(b"\n") + 1 and f"{len(whole):,} decompressed bytes" in msg
    f.write_bytes(raw[:-3] + b"\x00\x00\x00")  # a bad length / CRC trailer
    with pytest.raises(DataError, match=re.escape(str(f))):
        load(f"csv:{f}")
    f.write_bytes(raw + gzip.compress(body.encode()))  # several members: fine
    assert len(load(f"csv:{f}")) == 10_000
    g = write(tmp_path / "blank_tail.csv", text + "\n\n")  # sanity: the same text, plain
    assert len(load(f"csv:{g}")) == 5000


def test_blank_text_id_is_missing(tmp_path):
    """A whitespace-only id is a missing id on the fast path too (it was kept as an id)."""
    f = write(tmp_path / "ws.csv", "user,item\na,x\n  ,y\nb,z\n")
    with pytest.raises(DataError, match=re.escape(f"{f}, line 3, field 'user': missing value")):
        load(f"csv:{f}")
    g = write(tmp_path / "pad.csv", "user,item\n a ,x\na,y\n")
    assert decoded(load(f"csv:{g}"))[0] == ["a", "a"]


def test_parquet_blank_text_id_is_missing(tmp_path):
    f = tmp_path / "blank.parquet"
    pl.DataFrame({"user": ["a", " ", "b"], "item": [1, 2, 3]}).write_parquet(f)
    with pytest.raises(DataError, match=re.escape(f"{f}, field 'user': row 2: missing value (empty id)")):
        load(f"parquet:{f}")
