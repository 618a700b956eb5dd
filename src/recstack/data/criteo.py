"""Criteo display-advertising TSV: streamed in chunks with bounded memory.

Each line: ``label \\t I1..I13 \\t C1..C26`` (40 tab-separated fields): a 0/1 click label,
13 integer features (counts; may be negative; empty = missing) and 26 categorical features
(hashed 32-bit values written as 8 hex digits; empty = missing).

    for chunk in iter_criteo("day_0.tsv", chunk_rows=1_000_000):   # polars frames
        ...

Memory is bounded by one chunk (the file is read in blocks and cut at line ends), never by the
file. Malformed lines raise a DataError naming the file, the line number and the field.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.errors import DataError

LABEL = "label"
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS = [f"C{i}" for i in range(1, 27)]
COLUMNS = [LABEL, *INT_COLUMNS, *CAT_COLUMNS]
N_FIELDS = len(COLUMNS)


def _check_fields(block: bytes, path: str, first_line: int) -> None:
    """Every line of `block` (complete lines) must have exactly 40 fields."""
    b = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(b == 10)
    tabs = np.flatnonzero(b == 9)  # positions only: ~40 per line, not a counter per byte
    per_line = np.diff(np.searchsorted(tabs, nl), prepend=0)
    bad = np.flatnonzero(per_line != N_FIELDS - 1)
    if len(bad):
        i = int(bad[0])
        raise DataError(f"expected {N_FIELDS} tab-separated fields (label, I1-I13, C1-C26), found "
                        f"{int(per_line[i]) + 1}", path=path, line=first_line + i)


def _parse(block: bytes, path: str, first_line: int) -> pl.DataFrame:
    """Complete lines -> typed frame (label Int8, I* Int64 nullable, C* String nullable)."""
    _check_fields(block, path, first_line)
    raw = pl.read_csv(io.BytesIO(block), separator="\t", has_header=False, new_columns=COLUMNS,
                      schema={c: pl.String for c in COLUMNS}, quote_char=None)
    cols = []
    for name in (LABEL, *INT_COLUMNS):
        text = raw[name]
        x = text.cast(pl.Int64, strict=False)
        bad = np.flatnonzero((x.is_null() & text.is_not_null()).to_numpy())
        if len(bad) == 0 and name == LABEL:
            bad = np.flatnonzero((x.is_null() | ~x.is_in([0, 1])).to_numpy())
        if len(bad):
            i = int(bad[0])
            what = "a 0/1 label" if name == LABEL else "an integer"
            raise DataError(f"{text[i]!r} is not {what}", path=path, line=first_line + i, field=name)
        cols.append(x.cast(pl.Int8) if name == LABEL else x)
    return pl.DataFrame([*cols, *(raw[c] for c in CAT_COLUMNS)])


def iter_criteo(path: str | Path, chunk_rows: int = 1_000_000, block_bytes: int = 16 << 20,
                max_rows: int | None = None) -> Iterator[pl.DataFrame]:
    """Yield frames of up to `chunk_rows` lines of a Criteo TSV (see the module docstring).

    Args:
        path: the file.
        chunk_rows: lines per yielded frame (memory ~ chunk_rows x 40 fields).
        block_bytes: bytes read from disk at a time.
        max_rows: stop after this many lines (None = the whole file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such Criteo TSV file", path=str(path))
    line, done, eof = 1, 0, False
    buf = bytearray()
    with open(path, "rb") as f:
        while True:
            want = chunk_rows if max_rows is None else min(chunk_rows, max_rows - done)
            if want <= 0:
                return
            nls = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
            while len(nls) < want and not eof:  # read until `want` complete lines are buffered
                more = f.read(block_bytes)
                if not more:
                    eof = True
                    if buf and not buf.endswith(b"\n"):
                        buf += b"\n"  # a last line without its newline
                        nls = np.append(nls, len(buf) - 1)
                    break
                nls = np.concatenate([nls, len(buf) + np.flatnonzero(np.frombuffer(more, np.uint8) == 10)])
                buf += more
            if len(nls) == 0:
                return
            cut = int(nls[min(want, len(nls)) - 1]) + 1
            block = bytes(buf[:cut])
            del buf[:cut]
            frame = _parse(block, str(path), line)
            line += frame.height
            done += frame.height
            yield frame


def read_criteo(path: str | Path, max_rows: int | None = None) -> pl.DataFrame:
    """The whole file (or its first `max_rows` lines) as one frame."""
    chunks = list(iter_criteo(path, max_rows=max_rows))
    return pl.concat(chunks) if chunks else pl.DataFrame(schema={c: pl.String for c in COLUMNS})


def write_criteo(path: str | Path, frames: Iterable[pl.DataFrame]) -> int:
    """Write frames with the Criteo columns as a TSV (no header, empty = missing), chunk by
    chunk; returns the number of rows written."""
    n = 0
    with open(path, "wb") as f:
        for frame in frames:
            missing = [c for c in COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"write_criteo: frame lacks columns {missing}")
            frame.select(COLUMNS).write_csv(f, separator="\t", include_header=False, null_value="",
                                            quote_style="never")
            n += frame.height
    return n
