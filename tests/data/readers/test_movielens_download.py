"""MovieLens downloads behind ``movielens:<release>`` (`recstack.data.download`), offline:
the network is replaced by an error, releases are tiny zips written into the cache."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from urllib.error import URLError

import pytest
from reader_helpers import decoded

from recstack.data import DataError
from recstack.data import download as dl
from recstack.data.readers import load


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
