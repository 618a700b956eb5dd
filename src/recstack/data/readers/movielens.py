"""MovieLens: the embedded latest-small copy and the release directories.

========== =====================================================================================
embedded   MovieLens latest-small shipped inside the package (no path)
movielens  a MovieLens release directory (100K, 1M, 10M, 20M, 25M, 32M, latest), auto-detected,
           or a release name (``movielens:ml-1m``) which is downloaded and cached
========== =====================================================================================

100K is tab-separated ``u.data`` (+ ``|``-separated ``u.item`` / ``u.user`` / ``u.genre``), 1M and
10M are ``::``-separated ``.dat`` files, 20M and later are ``ratings.csv`` + ``movies.csv``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import polars as pl

from recstack.data.dataset import FeatureTable, Interactions
from recstack.data.errors import DataError
from recstack.data.readers._common import (
    _build,
    _categorical,
    _first_true,
    _gather,
    _multihot,
    _need_dir,
    _numeric,
    _read_delim,
    _read_sep_lines,
    _rows_for,
    _text,
)

# The 19 genres of MovieLens 100K, in flag order (used when u.genre is absent).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


_YEAR = r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$"  # "(1995)", "(2006-2007)", "(2007-)"


def _movie_features(title: pl.Series, genres: pl.Series) -> FeatureTable:
    """title (text), year (from "(1995)" ending the title; NaN if absent), genres (multihot)."""
    title = title.str.strip_chars()
    year = title.str.extract(_YEAR, 1).cast(pl.Float32)
    glist = genres.str.split("|").list.eval(
        pl.element().filter((pl.element() != "(no genres listed)") & (pl.element() != ""))
    )
    return FeatureTable(
        n=len(title),
        text={"title": _text(title)},
        numeric={"year": _numeric(year)},
        multihot={"genres": _multihot(glist)},
    )


# =============================================================================================
# embedded / movielens
# =============================================================================================
def embedded_path() -> Path:
    """Directory of the MovieLens latest-small copy shipped with the package."""
    return Path(str(files("recstack").joinpath("data", "embedded", "ml-latest-small")))


def read_embedded() -> Interactions:
    """MovieLens latest-small (100,004 ratings, 671 users, 9,066 rated movies) with item
    features title / year / genres; movies without ratings are not items."""
    return _read_ml_csv(embedded_path(), name="ml-latest-small", fmt="embedded")


def _read_ml_csv(d: Path, *, name: str, fmt: str) -> Interactions:
    """ratings.csv + movies.csv (MovieLens 20M, 25M, 32M, latest, latest-small)."""
    r = _read_delim(
        d / "ratings.csv",
        {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"},
        sep=",", what="MovieLens ratings.csv (userId,movieId,rating,timestamp)",
    )
    out = _build(r["userId"], r["movieId"], rating=r["rating"], timestamp=r["timestamp"],
                 name=name, fmt=fmt, log=[f"read {r.height} ratings from {d / 'ratings.csv'}"])
    movies = d / "movies.csv"
    if movies.exists():
        m = _read_delim(movies, {"movieId": "int", "title": "str", "genres": "str"}, sep=",",
                        what="MovieLens movies.csv (movieId,title,genres)")
        row_of = _rows_for(out.item_vocab, m["movieId"], movies, 2, "movieId")
        out.item_features = _movie_features(_gather(m["title"], row_of), _gather(m["genres"], row_of))
    return out


def read_movielens(path: str | Path, cache_dir: str | Path | None = None) -> Interactions:
    """A MovieLens release directory, release auto-detected; or a release name.

    - 100K: ``u.data`` (+ ``u.item``, ``u.user``, ``u.genre``); user features age (numeric),
      gender / occupation / zip (categorical); item features title, year, genres.
    - 1M / 10M: ``ratings.dat`` with ``::`` separators (+ ``movies.dat``; 1M: ``users.dat`` with
      gender / age / occupation / zip, all categorical since 1M codes age and occupation).
    - 20M / 25M / 32M / latest: ``ratings.csv`` + ``movies.csv``.

    If `path` is not a directory but a release name such as ``ml-1m``, the release is downloaded
    (or taken from the cache, see `recstack.data.download.download_movielens`).
    """
    d = Path(path)
    if not d.exists():
        from recstack.data.download import MOVIELENS_RELEASES, download_movielens

        if str(path) in MOVIELENS_RELEASES:
            d = download_movielens(str(path), Path(cache_dir) if cache_dir else None)
        else:
            raise DataError(
                "not found; expected a MovieLens directory (with u.data, ratings.dat or "
                f"ratings.csv) or a release name ({', '.join(MOVIELENS_RELEASES)})", path=str(d))
    _need_dir(d, "a MovieLens release (u.data, ratings.dat or ratings.csv)")
    marker = ("u.data", "ratings.dat", "ratings.csv")
    if not any((d / f).exists() for f in marker):
        # a zip extracted one level too high: descend into its single sub-directory
        subs = [p for p in d.iterdir() if p.is_dir()]
        if len(subs) == 1 and any((subs[0] / f).exists() for f in marker):
            d = subs[0]
    name = d.name
    if (d / "u.data").exists():
        return _read_ml100k(d, name)
    if (d / "ratings.dat").exists():
        return _read_ml_dat(d, name)
    if (d / "ratings.csv").exists():
        return _read_ml_csv(d, name=name, fmt="movielens")
    raise DataError(
        "no MovieLens release found: expected u.data (100K), ratings.dat (1M/10M) or "
        "ratings.csv (20M/25M/32M/latest) in this directory", path=str(d))


def _read_ml100k(d: Path, name: str) -> Interactions:
    r = _read_delim(
        d / "u.data", {"user": "int", "item": "int", "rating": "float", "timestamp": "int"},
        sep="\t", header=False, names=["user", "item", "rating", "timestamp"], quote=None,
        what="MovieLens 100K u.data (user item rating timestamp, tab-separated)",
    )
    out = _build(r["user"], r["item"], rating=r["rating"], timestamp=r["timestamp"], name=name,
                 fmt="movielens", log=[f"read {r.height} ratings from {d / 'u.data'}"])
    genres = list(ML100K_GENRES)
    if (d / "u.genre").exists():
        g = _read_delim(d / "u.genre", {"genre": "str", "index": "int"}, sep="|", header=False,
                        names=["genre", "index"], quote=None, encoding="auto")
        genres = g.sort("index")["genre"].to_list()
    item_path = d / "u.item"
    if item_path.exists():
        flags = [f"g{k}" for k in range(len(genres))]
        names = ["item", "title", "release_date", "video_release_date", "url", *flags]
        want = {"item": "int", "title": "str", "release_date": "str", **dict.fromkeys(flags, "int")}
        m = _read_delim(item_path, want, sep="|", header=False, names=names, quote=None,
                        encoding="auto", what="MovieLens 100K u.item")
        bad = m.select(pl.any_horizontal([~pl.col(f).is_in([0, 1]) for f in flags]))
        i = _first_true(bad.to_series().to_numpy())
        if i is not None:
            f = next(f for f in flags if m[f][i] not in (0, 1))
            raise DataError(f"genre flag must be 0 or 1, got {m[f][i]}", path=str(item_path),
                            line=i + 1, field=genres[flags.index(f)])
        glist = m.select(
            pl.concat_list([pl.when(pl.col(f) == 1).then(pl.lit(g)) for f, g in zip(flags, genres, strict=True)])
            .list.drop_nulls().alias("g")
        )["g"]
        row_of = _rows_for(out.item_vocab, m["item"], item_path, 1, "item")
        title = _gather(m["title"], row_of)
        year = title.str.strip_chars().str.extract(_YEAR, 1).fill_null(
            _gather(m["release_date"], row_of).str.extract(r"(\d{4})\s*$", 1)
        )
        out.item_features = FeatureTable(
            n=out.n_items,
            text={"title": _text(title)},
            numeric={"year": _numeric(year.cast(pl.Float32))},
            multihot={"genres": _multihot(_gather(glist, row_of))},
        )
    user_path = d / "u.user"
    if user_path.exists():
        u = _read_delim(user_path, {"user": "int", "age": "float", "gender": "str",
                                    "occupation": "str", "zip": "str"},
                        sep="|", header=False, names=["user", "age", "gender", "occupation", "zip"],
                        quote=None, encoding="auto", what="MovieLens 100K u.user")
        row_of = _rows_for(out.user_vocab, u["user"], user_path, 1, "user")
        out.user_features = FeatureTable(
            n=out.n_users,
            numeric={"age": _numeric(_gather(u["age"], row_of))},
            categorical={c: _categorical(_gather(u[c], row_of)) for c in ("gender", "occupation", "zip")},
        )
    return out


def _read_ml_dat(d: Path, name: str) -> Interactions:
    """1M / 10M: ``::``-separated ratings.dat, movies.dat, users.dat (1M)."""
    r = _read_sep_lines(
        d / "ratings.dat", "::", ["user", "item", "rating", "timestamp"],
        {"user": "int", "item": "int", "rating": "float", "timestamp": "int"},
        what="MovieLens ratings.dat (user::item::rating::timestamp)",
    )
    out = _build(r["user"], r["item"], rating=r["rating"], timestamp=r["timestamp"], name=name,
                 fmt="movielens", log=[f"read {r.height} ratings from {d / 'ratings.dat'}"])
    movies = d / "movies.dat"
    if movies.exists():
        m = _read_sep_lines(movies, "::", ["item", "title", "genres"],
                            {"item": "int", "title": "str", "genres": "str"}, encoding="auto",
                            what="MovieLens movies.dat")
        row_of = _rows_for(out.item_vocab, m["item"], movies, 1, "item")
        out.item_features = _movie_features(_gather(m["title"], row_of), _gather(m["genres"], row_of))
    users = d / "users.dat"
    if users.exists():
        cols = ["user", "gender", "age", "occupation", "zip"]
        u = _read_sep_lines(users, "::", cols, {"user": "int", **dict.fromkeys(cols[1:], "str")},
                            encoding="auto", what="MovieLens users.dat")
        row_of = _rows_for(out.user_vocab, u["user"], users, 1, "user")
        out.user_features = FeatureTable(
            n=out.n_users, categorical={c: _categorical(_gather(u[c], row_of)) for c in cols[1:]}
        )
    return out

