"""LightGCN / NGCF split reader (`recstack.data.readers.lightgcn`)."""

from __future__ import annotations

import re

import pytest
from reader_helpers import check_bad_line, decoded, write

from recstack.data import TEST, TRAIN, DataError
from recstack.data.readers import load


def test_lightgcn(tmp_path):
    write(tmp_path / "g" / "train.txt", "0 5 3\n1 3\n2\n3 0 1 2\n")
    write(tmp_path / "g" / "test.txt", "0 1\n1 5 0\n\n")
    d = load(f"lightgcn:{tmp_path / 'g'}")
    assert decoded(d) == ([0, 0, 1, 3, 3, 3, 0, 1, 1], [5, 3, 3, 0, 1, 2, 1, 5, 0])
    assert d.fold.tolist() == [TRAIN] * 6 + [TEST] * 3
    assert d.timestamp is None and d.n_users == 4  # user 2 has no items but is a user
    assert (d.name, d.fmt) == ("g", "lightgcn")


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
BAD_LINES = [
    # (files {name: text}, spec path, file named in message, line, field)
    ({"train.txt": "0 1 2\n1 2 x\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, "item 2"),
    ({"train.txt": "0 1\n-1 2\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, "user"),
    ({"train.txt": "0 1\n\n1 2\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, None),
    ({"train.txt": "0 1\n1 2\n", "test.txt": "0 3\n0 4\n"}, ".", "test.txt", 2, "user"),
    ({"train.txt": "0 1\n"}, ".", "test.txt", None, None),
]


@pytest.mark.parametrize(("files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"lightgcn-{i}" for i in range(len(BAD_LINES))])
def test_bad_lightgcn(tmp_path, files, target, named, line, field):
    check_bad_line(tmp_path, "lightgcn", files, target, named, line, field)


def test_bad_lightgcn_message_names_file_line_and_field(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 2 x\n")
    write(tmp_path / "test.txt", "0 3\n")
    with pytest.raises(DataError, match=re.escape(
            f"{tmp_path / 'train.txt'}, line 2, field 'item 2': expected a non-negative integer, got 'x'")):
        load(f"lightgcn:{tmp_path}")
    write(tmp_path / "train.txt", "0 1\n1 2\n")
    write(tmp_path / "test.txt", "0 3\n2 4\n0 5\n")
    with pytest.raises(DataError, match=re.escape(
            f"{tmp_path / 'test.txt'}, line 3, field 'user': user 0 appears again (first on line 1)")):
        load(f"lightgcn:{tmp_path}")
