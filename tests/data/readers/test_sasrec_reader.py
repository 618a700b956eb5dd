"""SASRec reader (`recstack.data.readers.sasrec`)."""

from __future__ import annotations

import re

import pytest
from reader_helpers import check_bad_line, decoded, write

from recstack.data import DataError
from recstack.data.readers import load


def test_sasrec(tmp_path):
    f = write(tmp_path / "seq.txt", "1 10\n2 11\n1 12\n1 10\n2 13\n")
    d = load(f"sasrec:{f}")
    assert decoded(d) == ([1, 2, 1, 1, 2], [10, 11, 12, 10, 13])
    assert d.timestamp.tolist() == [0, 0, 1, 2, 1]


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
BAD_LINES = [
    # (files {name: text}, spec path, file named in message, line, field)
    ({"q.txt": "1 2\n1 3 4\n"}, "q.txt", "q.txt", 2, "#3"),
    ({"q.txt": "1 2\n1 b\n"}, "q.txt", "q.txt", 2, "item"),
]


@pytest.mark.parametrize(("files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"sasrec-{i}" for i in range(len(BAD_LINES))])
def test_bad_sasrec(tmp_path, files, target, named, line, field):
    check_bad_line(tmp_path, "sasrec", files, target, named, line, field)


def test_bad_sasrec_message_names_file_line_and_field(tmp_path):
    f = write(tmp_path / "q.txt", "1 2\n1 3\nu 4\n")
    with pytest.raises(DataError, match=re.escape(f"{f}, line 3, field 'user': expected an integer, got 'u'")):
        load(f"sasrec:{f}")
