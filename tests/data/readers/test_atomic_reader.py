"""RecBole atomic files reader (`recstack.data.readers.atomic`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from reader_helpers import check_bad_line, decoded, item_index, multihot_row, write

from recstack.data import DataError
from recstack.data.readers import load


def atomic_dir(tmp_path: Path) -> Path:
    d = tmp_path / "atom"
    write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\tlabel:float\n"
          "u1\t10\t4\t100\t1\nu2\t20\t3.5\t90\t0\nu1\t30\t5\t80\t1\n")
    write(d / "toy.user", "user_id:token\tage:float\tgender:token\n"
          "u9\t50\tF\nu2\t\tM\nu1\t31\t\n")
    write(d / "toy.item", "item_id:token\tmovie_title:token_seq\tclass:token_seq\tvec:float_seq\n"
          "20\tThe Thing\tHorror  Sci-Fi\t1 2\n10\tUp\t\t3\n99\tGone\tX\t4\n")
    return d


def test_atomic(tmp_path):
    d = load(f"atomic:{atomic_dir(tmp_path)}")
    assert decoded(d) == (["u1", "u2", "u1"], [10, 20, 30])
    assert d.rating.tolist() == [4.0, 3.5, 5.0] and d.timestamp.tolist() == [100, 90, 80]
    assert (d.name, d.fmt) == ("toy", "atomic")
    uf, itf = d.user_features, d.item_features
    assert uf.n == 2 and itf.n == 3  # u9 and item 99 have no interactions: dropped
    age, (gcodes, gvoc) = uf.numeric["age"], uf.categorical["gender"]
    u1, u2 = (int(np.flatnonzero(d.user_vocab.raw == u)[0]) for u in ("u1", "u2"))
    assert age[u1] == 31 and np.isnan(age[u2])
    assert gcodes[u1] == -1 and gvoc[gcodes[u2]] == "M"
    i10, i20, i30 = (item_index(d, i) for i in (10, 20, 30))
    assert itf.text["movie_title"].tolist() == ["Up", "The Thing", ""]  # item 30: no row -> empty
    assert multihot_row(itf, "class", i20) == ["Horror", "Sci-Fi"]
    assert multihot_row(itf, "class", i10) == [] and multihot_row(itf, "class", i30) == []
    assert "vec" not in itf.names() and any("float_seq" in m for m in d.log)


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
BAD_LINES = [
    # (files {name: text}, spec path, file named in message, line, field)
    ({"a.inter": "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\tgood\n"}, ".",
     "a.inter", 3, "rating:float"),
    ({"a.inter": "user_id:token\titem_id:tok\n1\t2\n"}, ".", "a.inter", 1, "item_id:tok"),
    ({"a.inter": "uid:token\titem_id:token\n1\t2\n"}, ".", "a.inter", 1, "user_id"),
    ({"a.inter": "user_id:token\titem_id:token\n1\t2\n",
      "a.item": "item_id:token\tprice:float\n2\t1.5\n2\t3\n"}, ".", "a.item", 3, "item_id:token"),
    ({"a.inter": "user_id:token\titem_id:token\n1\t2\n",
      "a.user": "user_id:token\tage:float\n1\told\n"}, ".", "a.user", 2, "age:float"),
]


@pytest.mark.parametrize(("files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"atomic-{i}" for i in range(len(BAD_LINES))])
def test_bad_atomic(tmp_path, files, target, named, line, field):
    check_bad_line(tmp_path, "atomic", files, target, named, line, field)


def test_bad_atomic_message_names_file_line_and_field(tmp_path):
    f = write(tmp_path / "a.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\tnoon\n")
    with pytest.raises(DataError, match=re.escape(
            f"{f}, line 3, field 'timestamp:float': expected a finite number, got 'noon'")):
        load(f"atomic:{tmp_path}")
    write(f, "user_id:token\titem_id:token\n1\t2\n")
    g = write(tmp_path / "a.item", "item_id:token\tgenre:token\n2\tx\n5\ty\n2\tz\n")
    with pytest.raises(DataError, match=re.escape(
            f"{g}, line 4, field 'item_id:token': duplicate id '2' (first on line 2)")):
        load(f"atomic:{f}")


# ------------------------------------------------------------------------------------------
# RecBole's pre-split files (benchmark_filename): NAME.train.inter, NAME.valid.inter, NAME.test.inter
# ------------------------------------------------------------------------------------------
HEAD = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def presplit_dir(tmp_path: Path, with_valid: bool = True, **override: str) -> Path:
    d = tmp_path / "bench"
    files = {"train": HEAD + "u1\t10\t4\t1\nu2\t20\t3\t2\nu1\t20\t5\t3\nu3\t30\t1\t4\n",
             "valid": HEAD + "u1\t30\t2\t5\nu2\t10\t4\t6\n",
             "test": HEAD + "u3\t10\t5\t7\nu2\t30\t2\t8\nu1\t40\t1\t9\n"}
    files.update(override)
    for part, text in files.items():
        if part != "valid" or with_valid:
            write(d / f"ml.{part}.inter", text)
    write(d / "ml.item", "item_id:token\tgenre:token\n10\tA\n40\tB\n")
    return d


@pytest.mark.parametrize("target", [".", "ml.train.inter", "ml.test.inter", "ml"])
def test_presplit_one_vocabulary_and_a_fold_per_file(tmp_path, target):
    from recstack.data import TEST, TRAIN, VALID
    from recstack.data.transforms import split

    d = load(f"atomic:{presplit_dir(tmp_path) / target}")
    assert (d.name, d.fmt) == ("ml", "atomic")
    assert decoded(d) == (["u1", "u2", "u1", "u3", "u1", "u2", "u3", "u2", "u1"],
                          [10, 20, 20, 30, 30, 10, 10, 30, 40])
    assert d.fold.tolist() == [TRAIN] * 4 + [VALID] * 2 + [TEST] * 3
    assert d.timestamp.tolist() == list(range(1, 10)) and d.rating[-1] == 1.0
    assert (d.n_users, d.n_items) == (3, 4)  # item 40 (test only) kept: RecBole's choice for items
    assert d.item_features.n == 4 and any("kept 1 test rows whose item" in m for m in d.log)
    sp = split(d, "given")
    assert (len(sp.train), len(sp.valid), len(sp.test)) == (4, 2, 3)
    assert sp.test.item_vocab is sp.train.item_vocab


def test_presplit_without_valid_and_text_ids_in_one_file(tmp_path):
    base = presplit_dir(tmp_path, with_valid=False, test=HEAD + "u3\tx7\t5\t7\n")
    d = load(f"atomic:{base}", cold_items="keep")
    assert d.fold.tolist() == [0, 0, 0, 0, 2]
    assert decoded(d)[1] == ["10", "20", "20", "30", "x7"]  # text ids in one file: text everywhere


def test_presplit_cold_policies(tmp_path):
    cold = {"test": HEAD + "u3\t10\t5\t7\nu9\t30\t2\t8\nu1\t40\t1\t9\n"}
    base = presplit_dir(tmp_path, **cold)
    with pytest.raises(DataError, match=re.escape(
            f"{base / 'ml.test.inter'}, line 3, field 'user_id:token': user 'u9' is not in ml.train.inter "
            "(1 such row(s) in this file; pass cold_users=keep to keep them, cold_users=drop to drop them)")):
        load(f"atomic:{base}")
    kept = load(f"atomic:{base}?cold_users=keep")
    assert "u9" in kept.user_vocab.raw.tolist() and len(kept) == 9
    dropped = load(f"atomic:{base}?cold_users=drop&cold_items=drop")
    assert len(dropped) == 7 and "u9" not in dropped.user_vocab.raw.tolist() and dropped.n_items == 3
    with pytest.raises(DataError, match=re.escape(
            f"{base / 'ml.test.inter'}, line 4, field 'item_id:token': item 40 is not in ml.train.inter")):
        load(f"atomic:{base}?cold_users=keep&cold_items=error")
    with pytest.raises(DataError, match="cold_items must be one of error, keep, drop, got 'maybe'"):
        load(f"atomic:{base}?cold_items=maybe")


PRESPLIT_BAD = [
    # (override files, message, file named, field)
    ({"valid": "user_id:token\titem_id:token\trating:float\n"}, "header differs from ml.train.inter: column "
     "'timestamp:float' is missing", "ml.valid.inter", "timestamp:float"),
    ({"test": HEAD.replace("rating:float", "rating:token")}, "header differs from ml.train.inter: type "
     "'token' here, 'float' there", "ml.test.inter", "rating:token"),
    ({"test": HEAD.replace("\n", "\tlabel:float\n") + "u1\t10\t1\t1\t1\n"}, "header differs from "
     "ml.train.inter: column 'label:float' is not in it", "ml.test.inter", "label:float"),
    ({"valid": HEAD + "u1\t30\tgood\t5\n"}, "expected a finite number, got 'good'", "ml.valid.inter",
     "rating:float"),
]


@pytest.mark.parametrize(("files", "message", "named", "field"), PRESPLIT_BAD,
                         ids=[f"presplit-{i}" for i in range(len(PRESPLIT_BAD))])
def test_presplit_bad_files(tmp_path, files, message, named, field):
    base = presplit_dir(tmp_path, **files)
    with pytest.raises(DataError) as e:
        load(f"atomic:{base}")
    text = str(e.value)
    assert message in text and str(base / named) in text and f"field '{field}'" in text and "\n" not in text


def test_presplit_needs_train_and_test_and_one_data_set(tmp_path):
    base = presplit_dir(tmp_path)
    (base / "ml.test.inter").unlink()
    with pytest.raises(DataError, match=re.escape("missing: ml.test.inter")):
        load(f"atomic:{base}")
    write(base / "ml.test.inter", HEAD + "u1\t30\t2\t5\n")
    write(base / "other.inter", HEAD + "u1\t30\t2\t5\n")
    with pytest.raises(DataError, match=re.escape("found: other.inter, ml.train/.valid/.test.inter")):
        load(f"atomic:{base}")
    assert len(load(f"atomic:{base / 'other.inter'}")) == 1 and load(f"atomic:{base / 'ml'}").fold is not None
