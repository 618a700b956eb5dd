"""MovieLens readers (`recstack.data.readers.movielens`): the embedded latest-small copy and
the release directories (100K, 1M / 10M ``.dat``, 20M and later ``.csv``)."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from reader_helpers import check_bad_line, decoded, item_index, multihot_row, write

from recstack.data import DataError
from recstack.data.readers import embedded_path, load


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
BAD_LINES = [
    # (files {name: text}, spec path, file named in message, line, field)
    ({"ratings.dat": "1::2::3::4\n1::2::3\n"}, ".", "ratings.dat", 2, "timestamp"),
    ({"ratings.dat": "1::2::3::4\n1::x::3::5\n"}, ".", "ratings.dat", 2, "item"),
    ({"u.data": "1\t2\t3\t4\n1\t2\t3\t4\t5\n"}, ".", "u.data", 2, "#5"),
    ({"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n1,2.5,3,4\n"}, ".",
     "ratings.csv", 3, "movieId"),
    ({"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n",
      "movies.csv": "movieId,title,genres\n2,A (1990),Drama\nzz,B,Drama\n"}, ".",
     "movies.csv", 3, "movieId"),
]


@pytest.mark.parametrize(("files", "target", "named", "line", "field"), BAD_LINES,
                         ids=[f"movielens-{i}" for i in range(len(BAD_LINES))])
def test_bad_movielens(tmp_path, files, target, named, line, field):
    check_bad_line(tmp_path, "movielens", files, target, named, line, field)


def test_bad_movielens_message_names_file_line_and_field(tmp_path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::2::3::4\n1::3::high::5\n")
    with pytest.raises(DataError, match=re.escape(
            f"{d / 'ratings.dat'}, line 2, field 'rating': expected a finite number, got 'high'")):
        load(f"movielens:{d}")
    d = tmp_path / "ml-100k"
    write(d / "u.data", "1\t2\t3\t4\n")
    flags = "|".join(["0"] * 19)
    bad = "|".join(["0"] * 5 + ["2"] + ["0"] * 13)
    write(d / "u.item", f"2|A (1990)|||http://x|{flags}\n3|B (1991)|||http://y|{bad}\n")
    with pytest.raises(DataError, match=re.escape(
            f"{d / 'u.item'}, line 2, field 'Comedy': genre flag must be 0 or 1, got 2")):
        load(f"movielens:{d}")
    write(d / "u.item", f"2|A (1990)|||http://x|{flags}\n")
    write(d / "u.user", "1|24|M|technician|85711\n1|53|F|other|94043\n")
    with pytest.raises(DataError, match=re.escape(
            f"{d / 'u.user'}, line 2, field 'user': duplicate id 1 (first on line 1)")):
        load(f"movielens:{d}")
