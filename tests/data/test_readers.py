"""Readers addressed by spec strings, MovieLens downloads, and bad-input errors.

Uses only the embedded data set and small files generated in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import polars as pl
import pytest

from recstack.data import TEST, TRAIN, DataError, Interactions
from recstack.data import download as dl
from recstack.data.readers import FORMATS, embedded_path, load, parse_spec


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def decoded(d: Interactions) -> tuple[list, list]:
    return d.user_vocab.decode(d.user).tolist(), d.item_vocab.decode(d.item).tolist()


def multihot_row(ft, name: str, k: int) -> list:
    off, val, voc = ft.multihot[name]
    return voc[val[off[k]:off[k + 1]]].tolist()


def item_index(d: Interactions, raw) -> int:
    return int(np.flatnonzero(d.item_vocab.raw == raw)[0])


# ------------------------------------------------------------------------------------------
# spec strings
# ------------------------------------------------------------------------------------------
def test_parse_spec():
    assert parse_spec("embedded") == ("embedded", None, {})
    fmt, path, opts = parse_spec("csv:/x/y.csv?user=uid&item=iid&rating=score&timestamp=ts&sep=;")
    assert (fmt, path) == ("csv", "/x/y.csv")
    assert opts == {"user": "uid", "item": "iid", "rating": "score", "timestamp": "ts", "sep": ";"}
    assert parse_spec("CSV:a.csv")[0] == "csv"


def test_unknown_format_lists_known():
    with pytest.raises(DataError) as e:
        load("nope:/x")
    for f in FORMATS:
        assert f in str(e.value)


def test_bad_option_and_path_errors(tmp_path):
    f = write(tmp_path / "r.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="no option 'colour'"):
        load(f"csv:{f}?colour=red")
    with pytest.raises(DataError, match="takes no path"):
        load("embedded:/x")
    with pytest.raises(DataError, match="needs a path"):
        load("csv")
    with pytest.raises(DataError) as e:
        load(f"csv:{tmp_path / 'missing.csv'}")
    assert "missing.csv" in str(e.value) and "expected" in str(e.value)


# ------------------------------------------------------------------------------------------
# embedded
# ------------------------------------------------------------------------------------------
def test_embedded():
    d = load("embedded")
    assert (len(d), d.n_users, d.n_items) == (100_004, 671, 9_066)
    assert (d.name, d.fmt) == ("ml-latest-small", "embedded")
    assert (embedded_path() / "ratings.csv").is_file()
    ft = d.item_features
    assert ft.n == d.n_items
    k = item_index(d, 1)
    assert ft.text["title"][k] == "Toy Story (1995)"
    assert ft.numeric["year"][k] == 1995
    assert multihot_row(ft, "genres", k) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    # "(no genres listed)" -> empty; title without a year -> NaN
    movies = pl.read_csv(embedded_path() / "movies.csv")
    rated = set(d.item_vocab.raw.tolist())
    nog = movies.filter(pl.col("genres") == "(no genres listed)")["movieId"].to_list()
    nog = [m for m in nog if m in rated]
    assert nog and all(multihot_row(ft, "genres", item_index(d, m)) == [] for m in nog)
    assert np.isnan(ft.numeric["year"]).sum() >= 1
    # aligned to the item vocab: every item's title is its movie's title
    titles = dict(zip(movies["movieId"].to_list(), movies["title"].to_list(), strict=True))
    assert all(ft.text["title"][j] == titles[m].strip() for j, m in enumerate(d.item_vocab.raw.tolist()))
    # raw ids decode back exactly
    r = pl.read_csv(embedded_path() / "ratings.csv")
    u, i = decoded(d)
    assert u == r["userId"].to_list() and i == r["movieId"].to_list()
    assert np.allclose(d.rating, r["rating"].to_numpy()) and (d.timestamp == r["timestamp"].to_numpy()).all()


# ------------------------------------------------------------------------------------------
# csv / parquet
# ------------------------------------------------------------------------------------------
def test_csv_roundtrip_options(tmp_path):
    f = write(tmp_path / "log.csv", "uid;iid;score;ts;extra\nu1;i9;4.5;100;x\nu2;i1;3;50;y\nu1;i1;1;70;z\n")
    d = load(f"csv:{f}?user=uid&item=iid&rating=score&timestamp=ts&sep=;")
    assert decoded(d) == (["u1", "u2", "u1"], ["i9", "i1", "i1"])
    assert d.rating.tolist() == [4.5, 3.0, 1.0] and d.timestamp.tolist() == [100, 50, 70]
    assert (d.name, d.fmt) == ("log", "csv")


def test_csv_default_names_weight_and_ints(tmp_path):
    f = write(tmp_path / "w.csv", "userId,movieId,weight,time\n10,7,0.5,1.5\n3,7,2,2\n")
    d = load(f"csv:{f}")
    assert decoded(d) == ([10, 3], [7, 7])
    assert d.weight.tolist() == [0.5, 2.0] and d.timestamp.dtype == np.float64 and d.rating is None
    assert d.user_vocab.raw.dtype == np.int64


def test_csv_headerless_and_id_type(tmp_path):
    f = write(tmp_path / "h.tsv", "007\t1\t5\n8\t2\t4\n")
    d = load(f"csv:{f}", sep="tab", header=False)
    assert decoded(d) == (["007", "8"], [1, 2])  # "007" is not a canonical int: kept as text
    assert d.rating.tolist() == [5.0, 4.0]
    d = load(f"csv:{f}?sep=tab&header=false&id_type=str")
    assert decoded(d)[1] == ["1", "2"]


def test_csv_late_text_id_falls_back_to_text(tmp_path):
    rows = "".join(f"{k},{k % 7}\n" for k in range(1500))
    f = write(tmp_path / "late.csv", "user,item\n" + rows + "abc,3\n")
    d = load(f"csv:{f}")
    assert len(d) == 1501 and decoded(d)[0][-1] == "abc" and decoded(d)[0][0] == "0"


def test_parquet_roundtrip(tmp_path):
    f = tmp_path / "p.parquet"
    pl.DataFrame({"user_id": ["a", "b", "a"], "item_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0],
                  "ts": [3, 2, 1]}).write_parquet(f)
    d = load(f"parquet:{f}")
    assert decoded(d) == (["a", "b", "a"], [5, 6, 5])
    assert d.timestamp.tolist() == [3, 2, 1] and (d.name, d.fmt) == ("p", "parquet")


def test_parquet_null_is_error(tmp_path):
    f = tmp_path / "n.parquet"
    pl.DataFrame({"user": [1, None], "item": [1, 2]}).write_parquet(f)
    with pytest.raises(DataError) as e:
        load(f"parquet:{f}")
    assert "n.parquet" in str(e.value) and "row 2" in str(e.value) and "'user'" in str(e.value)


# ------------------------------------------------------------------------------------------
# one-user-per-line formats
# ------------------------------------------------------------------------------------------
def test_lightgcn(tmp_path):
    write(tmp_path / "g" / "train.txt", "0 5 3\n1 3\n2\n3 0 1 2\n")
    write(tmp_path / "g" / "test.txt", "0 1\n1 5 0\n\n")
    d = load(f"lightgcn:{tmp_path / 'g'}")
    assert decoded(d) == ([0, 0, 1, 3, 3, 3, 0, 1, 1], [5, 3, 3, 0, 1, 2, 1, 5, 0])
    assert d.fold.tolist() == [TRAIN] * 6 + [TEST] * 3
    assert d.timestamp is None and d.n_users == 4  # user 2 has no items but is a user
    assert (d.name, d.fmt) == ("g", "lightgcn")


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


def test_sasrec(tmp_path):
    f = write(tmp_path / "seq.txt", "1 10\n2 11\n1 12\n1 10\n2 13\n")
    d = load(f"sasrec:{f}")
    assert decoded(d) == ([1, 2, 1, 1, 2], [10, 11, 12, 10, 13])
    assert d.timestamp.tolist() == [0, 0, 1, 2, 1]


# ------------------------------------------------------------------------------------------
# RecBole atomic
# ------------------------------------------------------------------------------------------
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
# MovieLens releases
# ------------------------------------------------------------------------------------------
def test_movielens_100k(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", "1\t2\t3\t881250949\n2\t1\t5\t881250950\n1\t1\t4\t881250951\n")
    flags2 = "|".join(["0", "1"] + ["0"] * 17)
    flags1 = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    write(d / "u.item", f"1|Misérables, Les (1995)|01-Jan-1995||http://x|{flags1}\n"
          f"2|Untitled|01-Jan-1994||http://y|{flags2}\n3|Unrated (1990)|||http://z|{flags1}\n",
          encoding="latin-1")
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    ds = load(f"movielens:{d}")
    assert decoded(ds) == ([1, 2, 1], [2, 1, 1]) and ds.fmt == "movielens" and ds.name == "ml-100k"
    ft = ds.item_features
    assert ft.n == 2
    assert ft.text["title"][item_index(ds, 1)] == "Misérables, Les (1995)"
    assert ft.numeric["year"].tolist() == [1995, 1994]  # item 2: year from its release date
    assert multihot_row(ft, "genres", item_index(ds, 1)) == ["Comedy"]
    assert multihot_row(ft, "genres", item_index(ds, 2)) == ["Action"]
    uf = ds.user_features
    assert uf.numeric["age"].tolist() == [24, 53]
    codes, voc = uf.categorical["occupation"]
    assert voc[codes].tolist() == ["technician", "other"]


def test_movielens_1m_and_10m(tmp_path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n2::260::4::978302110\n")
    write(d / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
          "260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
          "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
          "5::Café (1995)::Comedy\n", encoding="latin-1")
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load(f"movielens:{d}")
    assert decoded(ds) == ([1, 2, 2], [1193, 661, 260]) and ds.rating.tolist() == [5.0, 3.0, 4.0]
    assert ds.timestamp.tolist() == [978300760, 978302109, 978302110]
    k = item_index(ds, 260)
    assert ds.item_features.text["title"][k] == "Star Wars: Episode IV - A New Hope (1977)"
    assert ds.item_features.numeric["year"][k] == 1977
    assert multihot_row(ds.item_features, "genres", item_index(ds, 661)) == ["Animation", "Children's", "Musical"]
    codes, voc = ds.user_features.categorical["age"]
    assert voc[codes].tolist() == ["1", "56"]
    d10 = tmp_path / "ml-10M100K"
    write(d10 / "ratings.dat", "1::122::4.5::838985046\n")
    write(d10 / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n")
    ds = load(f"movielens:{d10}")
    assert ds.rating.tolist() == [4.5] and ds.user_features is None
    assert ds.item_features.numeric["year"].tolist() == [1992]


def test_movielens_csv_release_and_nested_dir(tmp_path):
    d = tmp_path / "extract" / "ml-25m"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n")
    write(d / "movies.csv", 'movieId,title,genres\n296,"Pulp Fiction, The (1994)",Crime|Drama\n')
    ds = load(f"movielens:{tmp_path / 'extract'}")  # descends into the single sub-directory
    assert ds.name == "ml-25m" and ds.item_features.text["title"][0] == "Pulp Fiction, The (1994)"


def test_movielens_dir_without_release(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load(f"movielens:{tmp_path / 'empty'}")
    assert "u.data" in str(e.value) and "ratings.csv" in str(e.value) and "empty" in str(e.value)


# ------------------------------------------------------------------------------------------
# bad input: every error names the file, the line and the field
# ------------------------------------------------------------------------------------------
H = "user,item,rating,timestamp\n"
LONG_OK = "".join(f"{k},{k % 13},3,{k}\n" for k in range(1200))  # beyond the sniffed rows

BAD_CSV = [
    ("rating_text.csv", H + "1,2,3.0,10\n2,3,abc,11\n", 3, "rating"),
    ("ts_text.csv", H + "1,2,3,10\n3,4,5,2020-01-01\n", 3, "timestamp"),
    ("short_row.csv", H + "1,2,3,10\n2,3,4\n", 3, "timestamp"),
    ("long_row.csv", H + "1,2,3,10\n1,2,3,10\n2,3,4,5,6\n", 4, "#5"),
    ("empty_field.csv", H + "1,2,3,10\n2,,4,11\n", 3, "item"),
    ("blank_middle.csv", H + "1,2,3,10\n\n2,3,4,11\n", 3, None),
    ("nan_rating.csv", H + "1,2,nan,10\n", 2, "rating"),
    ("late_rating.csv", H + LONG_OK + "5,6,x,3\n", 1202, "rating"),
    ("late_short.csv", H + LONG_OK + "5,6,1\n", 1202, "timestamp"),
    ("empty.csv", "", 1, None),
    ("header_only.csv", H, 2, None),
]


@pytest.mark.parametrize(("name", "text", "line", "field"), BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv(tmp_path, name, text, line, field):
    f = write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        load(f"csv:{f}")
    msg = str(e.value)
    assert name in msg and f"line {line}" in msg, msg
    assert e.value.line == line
    if field is not None:
        assert f"field '{field}" in msg, msg


def test_bad_csv_missing_column(tmp_path):
    f = write(tmp_path / "cols.csv", "user,item\n1,2\n")
    with pytest.raises(DataError) as e:
        load(f"csv:{f}?rating=score")
    assert "cols.csv" in str(e.value) and "line 1" in str(e.value) and "'score'" in str(e.value)
    g = write(tmp_path / "noitem.csv", "user,thing\n1,2\n")
    with pytest.raises(DataError, match=r"noitem.csv, line 1, field 'item'"):
        load(f"csv:{g}")


def test_bad_int_ids_when_required(tmp_path):
    f = write(tmp_path / "ids.csv", "user,item\n1,2\nx,3\n")
    with pytest.raises(DataError, match=r"ids.csv, line 3, field 'user'.*'x'"):
        load(f"csv:{f}", id_type="int")


BAD_LINES = [
    # (format, files {name: text}, spec path, file named in message, line, field)
    ("lightgcn", {"train.txt": "0 1 2\n1 2 x\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, "item 2"),
    ("lightgcn", {"train.txt": "0 1\n-1 2\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, "user"),
    ("lightgcn", {"train.txt": "0 1\n\n1 2\n", "test.txt": "0 3\n"}, ".", "train.txt", 2, None),
    ("lightgcn", {"train.txt": "0 1\n1 2\n", "test.txt": "0 3\n0 4\n"}, ".", "test.txt", 2, "user"),
    ("lightgcn", {"train.txt": "0 1\n"}, ".", "test.txt", None, None),
    ("s3rec", {"S.txt": "1 2 3\n2 3 4.5\n"}, "S.txt", "S.txt", 2, "item 2"),
    ("s3rec", {"S.txt": "1 2 3\n2 0 4\n"}, "S.txt", "S.txt", 2, "item 1"),
    ("s3rec", {"S.txt": "1 2 3\n2\n"}, "S.txt", "S.txt", 2, "item 1"),
    ("s3rec", {"S.txt": "1 2 3\n", "S_item2attributes.json": '{"2": [1, "a"]}'}, "S.txt",
     "S_item2attributes.json", None, "2"),
    ("s3rec", {"S.txt": "1 2 3\n", "S_item2attributes.json": '{"2": [1,\n 2'}, "S.txt",
     "S_item2attributes.json", 2, None),
    ("sasrec", {"q.txt": "1 2\n1 3 4\n"}, "q.txt", "q.txt", 2, "#3"),
    ("sasrec", {"q.txt": "1 2\n1 b\n"}, "q.txt", "q.txt", 2, "item"),
    ("atomic", {"a.inter": "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\tgood\n"}, ".",
     "a.inter", 3, "rating:float"),
    ("atomic", {"a.inter": "user_id:token\titem_id:tok\n1\t2\n"}, ".", "a.inter", 1, "item_id:tok"),
    ("atomic", {"a.inter": "uid:token\titem_id:token\n1\t2\n"}, ".", "a.inter", 1, "user_id"),
    ("atomic", {"a.inter": "user_id:token\titem_id:token\n1\t2\n",
                "a.item": "item_id:token\tprice:float\n2\t1.5\n2\t3\n"}, ".", "a.item", 3, "item_id:token"),
    ("atomic", {"a.inter": "user_id:token\titem_id:token\n1\t2\n",
                "a.user": "user_id:token\tage:float\n1\told\n"}, ".", "a.user", 2, "age:float"),
    ("movielens", {"ratings.dat": "1::2::3::4\n1::2::3\n"}, ".", "ratings.dat", 2, "timestamp"),
    ("movielens", {"ratings.dat": "1::2::3::4\n1::x::3::5\n"}, ".", "ratings.dat", 2, "item"),
    ("movielens", {"u.data": "1\t2\t3\t4\n1\t2\t3\t4\t5\n"}, ".", "u.data", 2, "#5"),
    ("movielens", {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n1,2.5,3,4\n"}, ".",
     "ratings.csv", 3, "movieId"),
    ("movielens", {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n",
                   "movies.csv": "movieId,title,genres\n2,A (1990),Drama\nzz,B,Drama\n"}, ".",
     "movies.csv", 3, "movieId"),
]


@pytest.mark.parametrize(("fmt", "files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_LINES)])
def test_bad_line_formats(tmp_path, fmt, files, target, named, line, field):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        load(f"{fmt}:{tmp_path / target}")
    msg = str(e.value)
    assert named in msg, msg
    if line is not None:
        assert f"line {line}" in msg and e.value.line == line, msg
    if field is not None:
        assert f"field '{field}" in msg, msg


# ------------------------------------------------------------------------------------------
# downloads
# ------------------------------------------------------------------------------------------
def tiny_release_zip(cache: Path, release: str = "ml-latest-small") -> Path:
    zip_name, folder = dl.MOVIELENS_RELEASES[release]
    zpath = cache / "movielens" / zip_name
    zpath.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(f"{folder}/ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,5\n2,10,3.0,6\n")
        z.writestr(f"{folder}/movies.csv", "movieId,title,genres\n10,GoldenEye (1995),Action\n")
    return zpath


def sidecar(zpath: Path, digest: str | None = None) -> None:
    digest = digest or hashlib.sha256(zpath.read_bytes()).hexdigest()
    zpath.with_name(zpath.name + ".sha256").write_text(f"{digest}  {zpath.name}\n")


def no_network(*args, **kwargs):
    raise URLError("network is unreachable")


def test_download_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    with pytest.raises(DataError) as e:
        dl.download_movielens("ml-1m", tmp_path)
    msg = str(e.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg
    assert str(tmp_path / "movielens" / "ml-1m.zip") in msg
    # the same through a spec string, with the cache dir from the environment
    monkeypatch.setenv("RECSTACK_CACHE", str(tmp_path / "env"))
    with pytest.raises(DataError, match="ml-10m.zip") as e:
        load("movielens:ml-10m")
    assert str(tmp_path / "env" / "movielens" / "ml-10m.zip") in str(e.value)


def test_download_uses_cached_zip(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    zpath = tiny_release_zip(tmp_path)
    sidecar(zpath)
    out = dl.download_movielens("ml-latest-small", tmp_path)
    assert out == tmp_path / "movielens" / "ml-latest-small" and (out / "ratings.csv").is_file()
    d = load("movielens:ml-latest-small", cache_dir=str(tmp_path))
    assert decoded(d) == ([1, 2], [10, 10]) and d.item_features.numeric["year"].tolist() == [1995]


def test_download_first_use_records_sidecar(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    zpath = tiny_release_zip(tmp_path, "ml-32m")
    dl.download_movielens("ml-32m", tmp_path)
    recorded = zpath.with_name("ml-32m.zip.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(zpath.read_bytes()).hexdigest()


def test_download_sha_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    zpath = tiny_release_zip(tmp_path)
    sidecar(zpath, "0" * 64)
    with pytest.raises(DataError, match="SHA-256 mismatch") as e:
        dl.download_movielens("ml-latest-small", tmp_path)
    assert "ml-latest-small.zip" in str(e.value)
    monkeypatch.setitem(dl.SHA256, "ml-latest-small", "f" * 64)  # a known digest wins
    sidecar(zpath)
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        dl.download_movielens("ml-latest-small", tmp_path)


def test_download_md5_checked_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    tiny_release_zip(tmp_path, "ml-100k")  # not the official zip: the published MD5 differs
    with pytest.raises(DataError, match="MD5 mismatch"):
        dl.download_movielens("ml-100k", tmp_path)


def test_download_rejects_unsafe_zip(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", no_network)
    zpath = tiny_release_zip(tmp_path)
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("../evil.txt", "x")
    sidecar(zpath)
    with pytest.raises(DataError, match="unsafe zip member"):
        dl.download_movielens("ml-latest-small", tmp_path)
    assert not (tmp_path / "movielens" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_download_unknown_release(tmp_path):
    with pytest.raises(DataError, match="ml-1m"):
        dl.download_movielens("ml-2m", tmp_path)
