"""Readers addressed by a spec string ``FORMAT:PATH``.

``load("csv:/data/r.csv?user=uid&item=iid&sep=;")`` parses the spec, picks the reader for FORMAT
and returns an :class:`~recstack.data.dataset.Interactions`. Formats:

| FORMAT | what PATH is |
|---|---|
| embedded | MovieLens latest-small shipped inside the package (no path) |
| movielens | a MovieLens release directory (100K, 1M, 10M, 20M, 25M, 32M, latest), auto-detected, or a release name (``movielens:ml-1m``) which is downloaded and cached |
| atomic | RecBole atomic files ``<name>.inter`` (+ ``.user`` / ``.item``) in a directory |
| lightgcn | ``train.txt`` + ``test.txt``, one line per user: ``user item item ...`` |
| s3rec | one line per user, items in time order (+ ``<stem>_item2attributes.json``) |
| sasrec | ``user item`` per line, in time order per user |
| csv | delimited file with a header; column mapping options |
| parquet | parquet file; column mapping options |
| split | a split directory written by ``recstack data prepare`` (``--streaming`` too): its parts with a fold column, used as given |

Every reader parses with polars (vectorised). Bad input is never dropped silently: a
:class:`DataError` names the file, the 1-based line (counting the header line) and the field.
The happy path reads typed columns directly; only when that fails, or leaves nulls behind, the
file is read again as text to locate the first offending line (so errors cost time, data don't).

One module per format family (`movielens`, `atomic`, `lightgcn`, `s3rec`, `sasrec`,
`delimited`); validation and error reporting shared by all of them live in `_common`.
This module holds the spec parser and `FORMATS`, the one map from FORMAT to reader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from recstack.data.dataset import Interactions
from recstack.data.errors import DataError
from recstack.data.readers.atomic import read_atomic
from recstack.data.readers.delimited import read_csv, read_parquet
from recstack.data.readers.lightgcn import read_lightgcn
from recstack.data.readers.movielens import ML100K_GENRES as ML100K_GENRES
from recstack.data.readers.movielens import embedded_path, read_embedded, read_movielens
from recstack.data.readers.s3rec import read_s3rec
from recstack.data.readers.sasrec import read_sasrec

__all__ = [
    "FORMATS",
    "load",
    "parse_spec",
    "embedded_path",
    "read_embedded",
    "read_movielens",
    "read_atomic",
    "read_lightgcn",
    "read_s3rec",
    "read_sasrec",
    "read_csv",
    "read_parquet",
    "read_split",
]


# =============================================================================================
# spec strings
# =============================================================================================
def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``FORMAT:PATH?key=value&key=value`` into (format, path or None, options).

    Option values stay strings here; `load` converts them to the reader's parameter types.
    """
    fmt, colon, rest = spec.partition(":")
    fmt = fmt.strip().lower()
    opts: dict[str, str] = {}
    path: str | None = rest if colon else None
    if path is not None and "?" in path:
        head, _, query = path.partition("?")
        if "=" in query:
            path = head
            for part in query.split("&"):
                if not part:
                    continue
                key, eq, value = part.partition("=")
                if not eq:
                    raise DataError(f"bad option '{part}' in spec '{spec}': expected key=value")
                opts[key.strip()] = value
    if path is not None and not path.strip():
        path = None
    return fmt, path, opts


def load(spec: str, **options) -> Interactions:
    """Read the data set named by `spec` (``FORMAT:PATH[?key=value&...]``).

    Keyword `options` are passed to the format's reader and override options given in the spec.
    Examples: ``load("embedded")``, ``load("lightgcn:data/gowalla")``,
    ``load("csv:/x/y.csv?user=uid&item=iid&rating=score&sep=;")``, ``load("movielens:ml-1m")``.
    """
    fmt, path, opts = parse_spec(spec)
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}' in spec '{spec}'; known formats: {', '.join(FORMATS)}")
    reader = FORMATS[fmt]
    params = inspect.signature(reader).parameters
    merged: dict[str, object] = {}
    for key, value in {**opts, **options}.items():
        if key not in params or key == "path":
            accepted = [p for p in params if p != "path"]
            raise DataError(
                f"format '{fmt}' has no option '{key}'; accepted: {', '.join(accepted) or 'none'}"
            )
        default = params[key].default
        if isinstance(value, str) and isinstance(default, bool):
            value = _parse_bool(key, value)
        merged[key] = value
    if "path" in params:
        if path is None:
            raise DataError(f"format '{fmt}' needs a path: '{fmt}:PATH'")
        return reader(path, **merged)
    if path is not None:
        raise DataError(f"format '{fmt}' takes no path (got '{path}')")
    return reader(**merged)


def read_split(path: str) -> Interactions:
    """A split directory written by `recstack data prepare` (also with ``--streaming``) or
    `save_split`: every part's rows with a fold column, so the split is used as given
    (protocol ``given-files``); see :func:`recstack.data.transforms.read_split`."""
    from recstack.data.transforms import read_split as read

    return read(path)


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise DataError(f"option '{key}': expected true/false, got '{value}'")


# =============================================================================================
# FORMAT -> reader: the one place that maps a spec's format to its reader
# =============================================================================================
FORMATS: dict[str, Callable[..., Interactions]] = {
    "embedded": read_embedded,
    "movielens": read_movielens,
    "atomic": read_atomic,
    "lightgcn": read_lightgcn,
    "s3rec": read_s3rec,
    "sasrec": read_sasrec,
    "csv": read_csv,
    "parquet": read_parquet,
    "split": read_split,
}
