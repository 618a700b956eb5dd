"""RecBole atomic files: ``<name>.inter`` (+ ``.user`` / ``.item``) in a directory."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.dataset import FeatureTable, Interactions, Vocab
from recstack.data.errors import DataError
from recstack.data.readers._common import (
    _build,
    _categorical,
    _columns,
    _gather,
    _multihot,
    _need_file,
    _numeric,
    _read_delim,
    _rows_for,
    _source,
    _text,
)

_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _atomic_header(path: Path) -> dict[str, tuple[str, str]]:
    """{plain name: (header column, type)} of an atomic file."""
    cols = _columns(_source(path, "utf-8"), path, dict(separator="\t", quote_char=None, has_header=True), True, None)
    out = {}
    for c in cols:
        name, colon, typ = c.rpartition(":")
        if not colon or typ not in _ATOMIC_TYPES:
            raise DataError(f"header column must be name:type with type in {', '.join(_ATOMIC_TYPES)}",
                            path=str(path), line=1, field=c)
        out[name] = (c, typ)
    return out


def read_atomic(
    path: str | Path,
    user: str = "user_id",
    item: str = "item_id",
    rating: str = "rating",
    timestamp: str = "timestamp",
    id_type: str = "auto",
) -> Interactions:
    """RecBole atomic files: ``<name>.inter`` (+ ``<name>.user``, ``<name>.item``).

    `path` is the directory (holding exactly one ``.inter``) or the ``.inter`` file. Tab-separated
    with typed headers (``name:token|token_seq|float|float_seq``). Features: token -> categorical,
    float -> numeric, token_seq -> multihot (space-separated), or text when the column name
    contains "title"; float_seq columns are skipped (no feature type for them; logged).
    Ids that are all canonical integers become ints (`id_type` "str" keeps them as text).
    Feature rows of entities without interactions are dropped; entities without a feature row
    get missing values (-1 / NaN / empty).
    """
    if id_type not in ("auto", "int", "str"):
        raise DataError(f"id_type must be auto, int or str, got {id_type!r}")
    p = Path(path)
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if len(inters) != 1:
            found = ", ".join(x.name for x in inters) or "none"
            raise DataError(f"expected exactly one <name>.inter file in this directory, found: {found}"
                            " (give the .inter file itself to choose)", path=str(p))
        inter = inters[0]
    else:
        inter = _need_file(p if p.suffix == ".inter" else p.with_suffix(".inter"),
                           "a RecBole atomic <name>.inter file (or a directory holding one)")
    stem = inter.stem
    head = _atomic_header(inter)
    for role, col in (("user", user), ("item", item)):
        if col not in head:
            raise DataError(f"no {role} column '{col}'; columns: {', '.join(h for h, _ in head.values())}",
                            path=str(inter), line=1, field=col)
    want = {head[user][0]: "id", head[item][0]: "id"}
    if rating in head:
        want[head[rating][0]] = "float"
    if timestamp in head:
        want[head[timestamp][0]] = "time"
    df = _read_delim(inter, want, sep="\t", quote=None, id_type=id_type,
                     what="a RecBole atomic .inter file")
    ignored = [h for h, _ in head.values() if h not in want]
    log = [f"read {df.height} interactions from {inter}"]
    if ignored:
        log.append(f"ignored .inter columns: {', '.join(ignored)}")
    out = _build(
        df[head[user][0]], df[head[item][0]],
        rating=df[head[rating][0]] if rating in head else None,
        timestamp=df[head[timestamp][0]] if timestamp in head else None,
        name=stem, fmt="atomic", log=log,
    )
    for kind, col, vocab in (("user", user, out.user_vocab), ("item", item, out.item_vocab)):
        fpath = inter.with_name(f"{stem}.{kind}")
        if fpath.exists():
            table, skipped = _atomic_features(fpath, col, vocab)
            setattr(out, f"{kind}_features", table)
            if skipped:
                out.log.append(f"skipped float_seq columns of {fpath.name}: {', '.join(skipped)}")
    return out


def _atomic_features(path: Path, id_col: str, vocab: Vocab) -> tuple[FeatureTable, list[str]]:
    head = _atomic_header(path)
    if id_col not in head:
        raise DataError(f"no id column '{id_col}'", path=str(path), line=1, field=id_col)
    idh = head[id_col][0]
    want = {idh: "id"}
    for name, (h, typ) in head.items():
        if name != id_col:
            want[h] = "float?" if typ == "float" else "str"
    df = _read_delim(path, want, sep="\t", quote=None, id_type="str", what="a RecBole atomic feature file")
    row_of = _rows_for(vocab, df[idh], path, 2, idh)
    table = FeatureTable(n=len(vocab))
    skipped = []
    for name, (h, typ) in head.items():
        if name == id_col:
            continue
        s = _gather(df[h], row_of)
        if typ == "float":
            table.numeric[name] = _numeric(s)
        elif typ == "token":
            table.categorical[name] = _categorical(s)
        elif typ == "token_seq" and "title" in name.lower():
            table.text[name] = _text(s)
        elif typ == "token_seq":
            tokens = s.str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
            table.multihot[name] = _multihot(tokens)
        else:
            skipped.append(h)
    return table, skipped

