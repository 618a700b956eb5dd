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
