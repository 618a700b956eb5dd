"""Spec strings: `parse_spec` and the dispatch of `load` to the reader of each FORMAT."""

from __future__ import annotations

import pytest
from reader_helpers import write

from recstack.data import DataError
from recstack.data.readers import FORMATS, load, parse_spec


def test_parse_spec():
    assert parse_spec("embedded") == ("embedded", None, {})
    fmt, path, opts = parse_spec("csv:/x/y.csv?user=uid&item=iid&rating=score&timestamp=ts&sep=;")
    assert (fmt, path) == ("csv", "/x/y.csv")
    assert opts == {"user": "uid", "item": "iid", "rating": "score", "timestamp": "ts", "sep": ";"}
    assert parse_spec("CSV:a.csv")[0] == "csv"


def test_unknown_format_lists_known():
    with pytest.raises(DataError) as e:
        load("nope:/x")
    for f in FORMATS:
        assert f in str(e.value)


def test_bad_option_and_path_errors(tmp_path):
    f = write(tmp_path / "r.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="no option 'colour'"):
        load(f"csv:{f}?colour=red")
    with pytest.raises(DataError, match="takes no path"):
        load("embedded:/x")
    with pytest.raises(DataError, match="needs a path"):
        load("csv")
    with pytest.raises(DataError) as e:
        load(f"csv:{tmp_path / 'missing.csv'}")
    assert "missing.csv" in str(e.value) and "expected" in str(e.value)


def test_load_dispatches_through_formats(monkeypatch):
    calls = []

    def fake(path, user=None, header=True):
        calls.append((path, user, header))
        return "read"

    monkeypatch.setitem(FORMATS, "csv", fake)
    assert load("csv:/x/y.csv?user=uid&header=no") == "read"
    assert load("csv:/x/y.csv?header=no", header=True) == "read"  # keyword options win
    assert calls == [("/x/y.csv", "uid", False), ("/x/y.csv", None, True)]
    with pytest.raises(DataError, match="option 'header': expected true/false, got 'maybe'"):
        load("csv:/x/y.csv?header=maybe")
    with pytest.raises(DataError, match=r"bad option 'user' in spec"):
        load("csv:/x/y.csv?user&item=i")


def test_every_format_has_its_reader_module():
    modules = {fmt: reader.__module__ for fmt, reader in FORMATS.items()}
    assert modules == {
        "embedded": "recstack.data.readers.movielens",
        "movielens": "recstack.data.readers.movielens",
        "atomic": "recstack.data.readers.atomic",
        "lightgcn": "recstack.data.readers.lightgcn",
        "s3rec": "recstack.data.readers.s3rec",
        "sasrec": "recstack.data.readers.sasrec",
        "csv": "recstack.data.readers.delimited",
        "parquet": "recstack.data.readers.delimited",
        "split": "recstack.data.readers",  # a prepared split directory (transforms.read_split)
    }
