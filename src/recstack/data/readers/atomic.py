"""RecBole atomic files: ``<name>.inter`` (+ ``.user`` / ``.item``) in a directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import TEST, TRAIN, VALID, FeatureTable, Interactions, Vocab
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
    _show,
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


_PARTS = (("train", TRAIN), ("valid", VALID), ("test", TEST))
_COLD = ("error", "keep", "drop")


def _presplit_stem(path: Path) -> str | None:
    """NAME of a RecBole pre-split file ``NAME.train|valid|test.inter``, else None."""
    if path.suffix != ".inter":
        return None
    stem, dot, part = path.stem.rpartition(".")
    return stem if dot and stem and part in dict(_PARTS) else None


def _locate(p: Path) -> tuple[Path, str, bool]:
    """(directory, NAME, pre-split?) of the data set that `p` names: a directory holding one
    ``NAME.inter`` or one pre-split set ``NAME.train/.valid/.test.inter``, one of those files,
    or ``DIR/NAME`` (either kind)."""
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        whole = {x.stem for x in inters if _presplit_stem(x) is None}
        split = {s for x in inters if (s := _presplit_stem(x)) is not None}
        found = [f"{n}.inter" for n in sorted(whole)] + [f"{n}.train/.valid/.test.inter" for n in sorted(split)]
        if len(found) != 1:
            raise DataError(f"expected exactly one <name>.inter file (or one pre-split set <name>.train.inter, "
                            f"<name>.valid.inter, <name>.test.inter) in this directory, found: "
                            f"{', '.join(found) or 'none'} (give a file itself to choose)", path=str(p))
        return (p, next(iter(split)), True) if split else (p, next(iter(whole)), False)
    stem = _presplit_stem(p)
    if stem is not None:
        return p.parent, stem, True
    whole = p if p.suffix == ".inter" else p.with_suffix(".inter")
    if not whole.exists() and p.suffix != ".inter" and p.with_name(f"{p.name}.train.inter").exists():
        return p.parent, p.name, True
    _need_file(whole, "a RecBole atomic <name>.inter file, a pre-split <name>.train.inter, "
               "or a directory holding one")
    return whole.parent, whole.stem, False


def read_atomic(
    path: str | Path,
    user: str = "user_id",
    item: str = "item_id",
    rating: str = "rating",
    timestamp: str = "timestamp",
    id_type: str = "auto",
    cold_users: str = "error",
    cold_items: str = "keep",
) -> Interactions:
    """RecBole atomic files: ``<name>.inter`` (+ ``<name>.user``, ``<name>.item``).

    `path` is the directory (holding exactly one ``.inter``) or the ``.inter`` file. Tab-separated
    with typed headers (``name:token|token_seq|float|float_seq``). Features: token -> categorical,
    float -> numeric, token_seq -> multihot (space-separated), or text when the column name
    contains "title"; float_seq columns are skipped (no feature type for them; logged).
    Ids that are all canonical integers become ints (`id_type` "str" keeps them as text).
    Feature rows of entities without interactions are dropped; entities without a feature row
    get missing values (-1 / NaN / empty).

    RecBole's pre-split files (its ``benchmark_filename``): ``<name>.train.inter``,
    ``<name>.test.inter`` and optionally ``<name>.valid.inter`` in the directory (or `path` is
    one of them, or ``DIR/<name>``). One vocabulary spans all of them and `fold` marks each
    row's file (TRAIN / VALID / TEST), so ``split(data, "given")`` and `recstack train` use the
    split as given. The files must have the same header. Valid / test rows whose user
    (`cold_users`) or item (`cold_items`) is not in the train file: "error" (one line naming
    the file, line and id), "keep" (RecBole's choice), or "drop" (the rows; logged).
    """
    if id_type not in ("auto", "int", "str"):
        raise DataError(f"id_type must be auto, int or str, got {id_type!r}")
    for opt, value in (("cold_users", cold_users), ("cold_items", cold_items)):
        if value not in _COLD:
            raise DataError(f"{opt} must be one of {', '.join(_COLD)}, got {value!r}")
    d, stem, presplit = _locate(Path(path))
    files = ({part: d / f"{stem}.{part}.inter" for part, _ in _PARTS} if presplit
             else {"all": d / f"{stem}.inter"})
    if presplit:
        missing = [f.name for part, f in files.items() if part != "valid" and not f.is_file()]
        if missing:
            raise DataError(f"pre-split RecBole files need {stem}.train.inter and {stem}.test.inter "
                            f"({stem}.valid.inter is optional); missing: {', '.join(missing)}", path=str(d))
        files = {part: f for part, f in files.items() if f.is_file()}
    first = next(iter(files.values()))
    head = _atomic_header(first)
    for role, col in (("user", user), ("item", item)):
        if col not in head:
            raise DataError(f"no {role} column '{col}'; columns: {', '.join(h for h, _ in head.values())}",
                            path=str(first), line=1, field=col)
    for f in list(files.values())[1:]:
        _same_header(f, _atomic_header(f), first, head)
    want = {head[user][0]: "id", head[item][0]: "id"}
    if rating in head:
        want[head[rating][0]] = "float"
    if timestamp in head:
        want[head[timestamp][0]] = "time"
    parts = {part: _read_delim(f, want, sep="\t", quote=None, id_type=id_type,
                               what="a RecBole atomic .inter file") for part, f in files.items()}
    log = [f"read {df.height} interactions from {files[part]}" for part, df in parts.items()]
    if presplit:
        parts = {k: p.with_row_index("__row") for k, p in _unify(parts).items()}
        for role, col, policy in (("user", user, cold_users), ("item", item, cold_items)):
            parts = _cold(parts, files, head[col][0], role, policy, log)
        parts = {k: p.drop("__row") for k, p in parts.items()}
    df = pl.concat(list(parts.values()))
    fold = None
    if presplit:
        codes = dict(_PARTS)
        fold = np.concatenate([np.full(p.height, codes[k], np.int8) for k, p in parts.items()])
        log.append(f"pre-split RecBole files: the split is given by {', '.join(f.name for f in files.values())}")
    ignored = [h for h, _ in head.values() if h not in want]
    if ignored:
        log.append(f"ignored .inter columns: {', '.join(ignored)}")
    out = _build(
        df[head[user][0]], df[head[item][0]],
        rating=df[head[rating][0]] if rating in head else None,
        timestamp=df[head[timestamp][0]] if timestamp in head else None,
        fold=fold, name=stem, fmt="atomic", log=log,
    )
    for kind, col, vocab in (("user", user, out.user_vocab), ("item", item, out.item_vocab)):
        fpath = d / f"{stem}.{kind}"
        if fpath.exists():
            table, skipped = _atomic_features(fpath, col, vocab)
            setattr(out, f"{kind}_features", table)
            if skipped:
                out.log.append(f"skipped float_seq columns of {fpath.name}: {', '.join(skipped)}")
    return out


def _same_header(path: Path, head: dict[str, tuple[str, str]], ref: Path,
                 ref_head: dict[str, tuple[str, str]]) -> None:
    """A pre-split file's header must name the same columns with the same types as train's."""
    for name, (col, typ) in ref_head.items():
        if name not in head:
            raise DataError(f"header differs from {ref.name}: column '{col}' is missing; this file has "
                            f"{', '.join(h for h, _ in head.values())}", path=str(path), line=1, field=col)
        if head[name][1] != typ:
            raise DataError(f"header differs from {ref.name}: type '{head[name][1]}' here, '{typ}' there",
                            path=str(path), line=1, field=head[name][0])
    extra = [h for n, (h, _) in head.items() if n not in ref_head]
    if extra:
        raise DataError(f"header differs from {ref.name}: column '{extra[0]}' is not in it",
                        path=str(path), line=1, field=extra[0])


def _unify(parts: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """One dtype per column across the files (text ids if any file has text, floats if any
    file has fractional times), so that the files concatenate and ids compare."""
    cols = next(iter(parts.values())).columns
    target = {}
    for c in cols:
        dtypes = {p[c].dtype for p in parts.values()}
        if len(dtypes) > 1:
            target[c] = pl.String if pl.String in dtypes else pl.Float64
    return {k: p.with_columns([pl.col(c).cast(t) for c, t in target.items()]) for k, p in parts.items()}


def _cold(parts: dict[str, pl.DataFrame], files: dict[str, Path], col: str, role: str, policy: str,
          log: list[str]) -> dict[str, pl.DataFrame]:
    """Apply the policy for valid / test rows whose `role` id (column `col`) is not in train."""
    known = parts["train"][col].unique()
    out = dict(parts)
    for part in ("valid", "test"):
        if part not in parts:
            continue
        unknown = ~parts[part][col].is_in(known.implode()).to_numpy()
        n = int(unknown.sum())
        if not n:
            continue
        if policy == "error":
            i = int(np.flatnonzero(unknown)[0])
            option = f"cold_{role}s"
            raise DataError(f"{role} {_show(parts[part][col][i])} is not in {files['train'].name} "
                            f"({n:,} such row(s) in this file; pass {option}=keep to keep them, "
                            f"{option}=drop to drop them)", path=str(files[part]),
                            line=int(parts[part]["__row"][i]) + 2, field=col)  # + header, 1-based
        if policy == "drop":
            out[part] = parts[part].filter(pl.Series(~unknown))
            log.append(f"dropped {n:,} {part} rows whose {role} is not in {files['train'].name}")
        else:
            log.append(f"kept {n:,} {part} rows whose {role} is not in {files['train'].name}")
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

