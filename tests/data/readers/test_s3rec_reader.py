"""S3-Rec sequence reader with item attributes (`recstack.data.readers.s3rec`)."""

from __future__ import annotations

import json
import re

import pytest
from reader_helpers import check_bad_line, decoded, item_index, multihot_row, write

from recstack.data import DataError
from recstack.data.readers import load


def test_s3rec_with_attributes(tmp_path):
    f = write(tmp_path / "Toy.txt", "1 4 2 4\n2 2 9\n")
    write(tmp_path / "Toy_item2attributes.json", json.dumps({"2": [7, 1, 7], "4": [3], "11": [5]}))
    d = load(f"s3rec:{f}")
    assert decoded(d) == ([1, 1, 1, 2, 2], [4, 2, 4, 2, 9])
    assert d.timestamp.tolist() == [0, 1, 2, 0, 1]
    ft = d.item_features
    assert ft.n == 3
    assert multihot_row(ft, "attributes", item_index(d, 2)) == [7, 1]
    assert multihot_row(ft, "attributes", item_index(d, 4)) == [3]
    assert multihot_row(ft, "attributes", item_index(d, 9)) == []
    assert (d.name, d.fmt) == ("Toy", "s3rec")


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
BAD_LINES = [
    # (files {name: text}, spec path, file named in message, line, field)
    ({"S.txt": "1 2 3\n2 3 4.5\n"}, "S.txt", "S.txt", 2, "item 2"),
    ({"S.txt": "1 2 3\n2 0 4\n"}, "S.txt", "S.txt", 2, "item 1"),
    ({"S.txt": "1 2 3\n2\n"}, "S.txt", "S.txt", 2, "item 1"),
    ({"S.txt": "1 2 3\n", "S_item2attributes.json": '{"2": [1, "a"]}'}, "S.txt",
     "S_item2attributes.json", None, "2"),
    ({"S.txt": "1 2 3\n", "S_item2attributes.json": '{"2": [1,\n 2'}, "S.txt",
     "S_item2attributes.json", 2, None),
]


@pytest.mark.parametrize(("files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"s3rec-{i}" for i in range(len(BAD_LINES))])
def test_bad_s3rec(tmp_path, files, target, named, line, field):
    check_bad_line(tmp_path, "s3rec", files, target, named, line, field)


def test_bad_s3rec_message_names_file_line_and_field(tmp_path):
    f = write(tmp_path / "Bad.txt", "1 2 3\n2 x 4\n")
    with pytest.raises(DataError, match=re.escape(
            f"{f}, line 2, field 'item 1': expected an integer >= 1, got 'x'")):
        load(f"s3rec:{f}")
    f = write(tmp_path / "Dup.txt", "1 2 3\n2 4\n1 5\n")
    with pytest.raises(DataError, match=re.escape(
            f"{f}, line 3, field 'user': user 1 appears again (first on line 1)")):
        load(f"s3rec:{f}")
    # the attribute file is JSON: its entries are named by item id (the field), not by line
    f = write(tmp_path / "A.txt", "1 2 3\n")
    a = write(tmp_path / "A_item2attributes.json", '{"3": [1], "x": [2]}')
    with pytest.raises(DataError, match=re.escape(f"{a}, field 'x': item id must be an integer, got 'x'")):
        load(f"s3rec:{f}")
