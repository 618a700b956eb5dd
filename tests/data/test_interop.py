"""Data in (`recstack.data.interop`): pandas / polars / Arrow / scipy sparse constructors and
`as_interactions`, the coercion behind every model's `fit`."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import scipy.sparse as sp

from recstack.data import DataError, Interactions, as_interactions, from_raw

pd = pytest.importorskip("pandas")


def frame() -> dict:
    return {"user_id": ["u2", "u1", "u2", "u3"], "item_id": [30, 10, 10, 20],
            "rating": [4.0, 5.0, 3.5, 1.0], "timestamp": [3, 1, 2, 5]}


def raw(d: Interactions) -> tuple[list, list]:
    return d.user_vocab.decode(d.user).tolist(), d.item_vocab.decode(d.item).tolist()


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow", "lazy"])
def test_frames_keep_raw_ids_and_columns(kind):
    src = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.table,
           "lazy": lambda x: pl.DataFrame(x).lazy()}[kind](frame())
    ctor = {"pandas": Interactions.from_pandas, "arrow": Interactions.from_arrow}.get(kind, Interactions.from_polars)
    d = ctor(src, timestamp="timestamp", rating="rating")
    assert raw(d) == (["u2", "u1", "u2", "u3"], [30, 10, 10, 20])
    assert d.rating.tolist() == [4.0, 5.0, 3.5, 1.0] and d.timestamp.tolist() == [3, 1, 2, 5]
    assert d.timestamp.dtype == np.int64 and (d.n_users, d.n_items) == (3, 3)
    assert d.item_vocab.raw.dtype == np.int64  # integer ids stay integers
    same = from_raw(np.array(frame()["user_id"], dtype=object), frame()["item_id"])
    assert (d.user == same.user).all() and (d.item == same.item).all()  # the readers' encoding
    no_extras = ctor(src)
    assert no_extras.rating is None and no_extras.timestamp is None


def test_pandas_details_text_ids_exact_float_ids_datetimes_other_names():
    df = pd.DataFrame({"who": [" a", "b ", " a"], "what": [1.0, 2.0, 3.0],
                       "when": pd.to_datetime(["2020-01-01 00:00:00", "2020-01-02 00:00:00",
                                              "2020-01-02 00:00:01"])},
                      index=[7, 8, 9])
    d = Interactions.from_pandas(df, user="who", item="what", timestamp="when")
    assert raw(d) == ([" a", "b ", " a"], [1, 2, 3])  # text kept exactly; whole floats -> ints
    assert d.timestamp.tolist() == [1577836800, 1577923200, 1577923201]
    df.loc[9, "when"] = pd.Timestamp("2020-01-02 00:00:01.5")
    assert Interactions.from_pandas(df, user="who", item="what", timestamp="when").timestamp[-1] == 1577923201.5
    cat = pd.DataFrame({"user_id": pd.Categorical(["x", "y"]), "item_id": ["p", "q"]})
    assert raw(Interactions.from_pandas(cat)) == (["x", "y"], ["p", "q"])


BAD = [
    # (columns, kwargs, message)
    ({"user_id": [1, 2], "item": [1, 2]}, {},
     "pandas DataFrame, field 'item_id': no item column 'item_id'; columns: user_id, item"),
    ({"user_id": [1, None, 3], "item_id": [1, 2, 3]}, {},
     "pandas DataFrame, field 'user_id': data row 2: missing (null) id"),  # NaN is pandas' null
    ({"user_id": ["a", None], "item_id": [1, 2]}, {},
     "pandas DataFrame, field 'user_id': data row 2: missing (null) id"),
    ({"user_id": [1, 2], "item_id": [1.0, 2.5]}, {},
     "pandas DataFrame, field 'item_id': data row 2: expected an integer id, got 2.5"),
    ({"user_id": ["a", ""], "item_id": [1, 2]}, {}, "pandas DataFrame, field 'user_id': data row 2: empty id"),
    ({"user_id": [1, 2, 3], "item_id": [1, 2, 3], "r": ["4", "5", "x"]}, {"rating": "r"},
     "pandas DataFrame, field 'r': data row 3: expected a finite number, got 'x'"),
    ({"user_id": [1, 2], "item_id": [1, 2], "r": [1.0, np.inf]}, {"rating": "r"},
     "pandas DataFrame, field 'r': data row 2: expected a finite number, got inf"),
    ({"user_id": [1, 2], "item_id": [1, 2], "t": [1.0, None]}, {"timestamp": "t"},
     "pandas DataFrame, field 't': data row 2: missing value (null)"),
    ({"user_id": [1, "a"], "item_id": [1, 2]}, {}, "pandas DataFrame, field 'user_id': cannot convert the column"),
    ({"user_id": [], "item_id": []}, {}, "pandas DataFrame: no rows"),
]


@pytest.mark.parametrize(("cols", "kw", "message"), BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_bad_frames_raise_one_line_errors_naming_column_and_row(cols, kw, message):
    with pytest.raises(DataError) as e:
        Interactions.from_pandas(pd.DataFrame(cols), **kw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_polars_nulls_are_reported_like_the_readers():
    with pytest.raises(DataError, match=re.escape("polars DataFrame, field 'item_id': data row 3: missing (null) id")):
        Interactions.from_polars(pl.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", "b", None]}))


def test_csr_defaults_indices_values_become_ratings():
    m = sp.csr_matrix(np.array([[0, 2.0, 0], [1.0, 0, 0], [0, 0, 0], [0, 0, 5.0]]))
    m[2, 1] = 0.0  # an explicit zero is no interaction
    d = Interactions.from_csr(m)
    assert (d.n_users, d.n_items) == (4, 3)  # empty rows / columns stay: the catalogue is every column
    assert raw(d) == ([0, 1, 3], [1, 0, 2]) and d.rating.tolist() == [2.0, 1.0, 5.0]
    assert (d.csr(binary=True).toarray() == (m.toarray() != 0)).all()
    ones = Interactions.from_csr(sp.coo_matrix(m.toarray() != 0, dtype=np.float32))
    assert ones.rating is None


def test_csr_with_ids_keeps_row_order():
    m = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    d = Interactions.from_csr(m, user_ids=["z", "a", "m"], item_ids=[500, 7])
    assert d.user_vocab.raw.tolist() == ["z", "a", "m"] and d.item_vocab.raw.tolist() == [500, 7]
    assert d.user_vocab.encode(np.array(["m", "z"], dtype=object)).tolist() == [2, 0]
    assert raw(d) == (["z", "a", "m", "m"], [500, 7, 500, 7])


@pytest.mark.parametrize(("kw", "message"), [
    ({"user_ids": [1, 2]}, "field 'user_ids': 2 ids for 3 matrix rows"),
    ({"item_ids": ["a", "a"]}, "field 'item_ids': duplicate id 'a' at positions 0 and 1"),
])
def test_csr_bad_ids(kw, message):
    with pytest.raises(DataError, match=re.escape(message)):
        Interactions.from_csr(sp.eye(3, 2, format="csr"), **kw)


def test_csr_non_finite_value():
    m = sp.csr_matrix(np.array([[0, np.nan]]))
    with pytest.raises(DataError, match=re.escape("non-finite value nan at row 0, column 1")):
        Interactions.from_csr(m)


def test_as_interactions_dispatch_and_like():
    train = Interactions.from_pandas(pd.DataFrame(frame()))
    assert as_interactions(train) is train
    auto = as_interactions(pd.DataFrame(frame()))  # timestamp / rating picked up by name
    assert auto.timestamp.tolist() == [3, 1, 2, 5] and auto.rating is not None
    valid = as_interactions(pl.DataFrame({"user_id": ["u3"], "item_id": [30]}), like=train)
    assert valid.user_vocab is train.user_vocab and raw(valid) == (["u3"], [30])
    with pytest.raises(DataError, match=re.escape(
            "polars DataFrame, field 'item_id': data row 2: id 99 is not in the training data (1 row(s)")):
        as_interactions(pl.DataFrame({"user_id": ["u3", "u1"], "item_id": [30, 99]}), like=train)
    m = as_interactions(sp.csr_matrix((3, 3)), like=train)
    assert m.user_vocab is train.user_vocab and len(m) == 0
    with pytest.raises(DataError, match="does not match the training data"):
        as_interactions(sp.csr_matrix((2, 3)), like=train)
    with pytest.raises(DataError, match=re.escape(
            "Arrow table, field 'item_id': no column 'item_id' (columns: user_id, movie); name the columns "
            "user_id / item_id, or build the data with Interactions.from_arrow(x, user=..., item=...)")):
        as_interactions(pa.table({"user_id": [1], "movie": [2]}))
    with pytest.raises(TypeError, match="expected Interactions, a scipy sparse matrix, a pandas"):
        as_interactions([[1, 2]])
