"""Download and cache MovieLens releases from GroupLens.

Zips are cached under ``$RECSTACK_CACHE/movielens/`` (default ``~/.cache/recstack/movielens/``)
and extracted beside them. A zip already in the cache is used without any network access, so
to work offline put the zip there by hand (the error message says exactly where).

Integrity: a SHA-256 table would be best, but no SHA-256 digests of these zips were available
when this module was written, so none are invented: `SHA256` holds None for every release.
Instead the digest is recorded on first use in a sidecar ``<zip>.sha256`` (trust on first use)
and every later use is verified against it. Where GroupLens publishes an MD5 checksum (the
``.md5`` files beside its zips; the values below agree across several independent public
projects), a fresh download is also checked against it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.error import URLError
from urllib.request import urlopen

from recstack.data.errors import DataError

__all__ = ["MOVIELENS_RELEASES", "SHA256", "MD5", "default_cache_dir", "download_movielens",
           "safe_extract"]

BASE_URL = "https://files.grouplens.org/datasets/movielens"

# release -> (zip file name, directory the zip extracts to)
MOVIELENS_RELEASES: dict[str, tuple[str, str]] = {
    "ml-100k": ("ml-100k.zip", "ml-100k"),
    "ml-1m": ("ml-1m.zip", "ml-1m"),
    "ml-10m": ("ml-10m.zip", "ml-10M100K"),
    "ml-20m": ("ml-20m.zip", "ml-20m"),
    "ml-25m": ("ml-25m.zip", "ml-25m"),
    "ml-32m": ("ml-32m.zip", "ml-32m"),
    "ml-latest-small": ("ml-latest-small.zip", "ml-latest-small"),
    "ml-latest": ("ml-latest.zip", "ml-latest"),
}

# Known SHA-256 digests of the zips. None = unknown: verified against the sidecar instead.
SHA256: dict[str, str | None] = dict.fromkeys(MOVIELENS_RELEASES)

# MD5 checksums GroupLens publishes for its stable releases ("latest" ones change over time).
MD5: dict[str, str | None] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-10m": "ce571fd55effeba0271552578f2648bd",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
    "ml-32m": None,
    "ml-latest-small": None,
    "ml-latest": None,
}

_DONE = ".recstack-complete"  # written after a complete extraction


def default_cache_dir() -> Path:
    """``$RECSTACK_CACHE`` if set, else ``~/.cache/recstack``."""
    env = os.environ.get("RECSTACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recstack"


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(release: str, zip_path: Path, *, fresh: bool) -> None:
    """Check the zip against the known SHA-256, else the sidecar; record the sidecar (TOFU).

    On first use (no sidecar yet) the published MD5 is checked too, where known.
    """
    sidecar = zip_path.with_name(zip_path.name + ".sha256")
    actual = _digest(zip_path, "sha256")
    expected = SHA256.get(release)
    source = "the known digest"
    recorded = sidecar.read_text().split() if sidecar.exists() else []
    if expected is None and recorded:
        expected, source = recorded[0].lower(), f"the digest recorded in {sidecar} on first use"
    if expected is not None and actual != expected:
        if fresh:
            zip_path.unlink(missing_ok=True)
        raise DataError(
            f"SHA-256 mismatch for {release}: expected {expected} ({source}), got {actual}. "
            "The file is corrupt or not the official release"
            + ("; it was deleted, try again" if fresh else f"; delete {zip_path} and try again")
            + (f" (delete {sidecar} too if GroupLens has updated the release)" if recorded else ""),
            path=str(zip_path),
        )
    if not recorded and SHA256.get(release) is None and MD5.get(release):
        md5 = _digest(zip_path, "md5")
        if md5 != MD5[release]:
            if fresh:
                zip_path.unlink(missing_ok=True)
            raise DataError(
                f"MD5 mismatch for {release}: expected {MD5[release]} (published by GroupLens), "
                f"got {md5}; the file is corrupt or not the official release"
                + ("" if fresh else f": delete {zip_path} and try again"), path=str(zip_path))
    if not recorded:
        sidecar.write_text(f"{actual}  {zip_path.name}\n")


def safe_extract(zip_path: Path, target: Path) -> None:
    """Extract `zip_path` into `target`, refusing members that would land outside it
    (absolute paths, ``..`` components, symbolic links)."""
    root = target.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DataError(f"not a valid zip file ({e}); delete it and try again", path=str(zip_path)) from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            dest = (root / name).resolve()
            if (name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")
                    or is_link or (dest != root and root not in dest.parents)):
                raise DataError(f"unsafe zip member {name!r} (would be written outside {target})",
                                path=str(zip_path))
        zf.extractall(root)


def download_movielens(release: str, cache_dir: Path | None = None) -> Path:
    """The extracted directory of a MovieLens `release`, downloading it if needed.

    Releases: ml-100k, ml-1m, ml-10m (extracts to ``ml-10M100K``), ml-20m, ml-25m, ml-32m,
    ml-latest-small, ml-latest; fetched from ``https://files.grouplens.org/datasets/movielens/``.
    The zip is kept in ``<cache_dir>/movielens/`` (default cache dir: `default_cache_dir`). A
    cached zip is used without network access. Verification: against `SHA256` where a digest is
    known (none are, see the module docstring), otherwise against the sidecar ``<zip>.sha256``
    written on first use (trust on first use); fresh downloads are also checked against the
    MD5 GroupLens publishes, where known. On a network failure the DataError names the URL and
    the exact path to put the zip at to proceed offline.
    """
    if release not in MOVIELENS_RELEASES:
        raise DataError(f"unknown MovieLens release '{release}'; known: {', '.join(MOVIELENS_RELEASES)}")
    zip_name, folder = MOVIELENS_RELEASES[release]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = base / "movielens"
    out_dir = cache / folder
    zip_path = cache / zip_name
    if (out_dir / _DONE).exists():
        return out_dir
    cache.mkdir(parents=True, exist_ok=True)
    fresh = False
    if not zip_path.exists():
        url = f"{BASE_URL}/{zip_name}"
        _fetch(url, zip_path)
        fresh = True
    _verify(release, zip_path, fresh=fresh)
    # Extract into a temporary directory first so a crash never leaves a half-filled release.
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{folder}-") as tmp:
        safe_extract(zip_path, Path(tmp))
        src = Path(tmp) / folder
        if not src.is_dir():
            raise DataError(f"the zip does not contain the expected directory '{folder}/'",
                            path=str(zip_path))
        (src / _DONE).write_text(f"{release}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an earlier, incomplete extraction
        src.rename(out_dir)
    return out_dir


def _fetch(url: str, zip_path: Path) -> None:
    """Stream `url` to `zip_path` (atomically: via a temporary file in the same directory)."""
    part = zip_path.with_name(zip_path.name + ".part")
    try:
        with urlopen(url, timeout=60) as resp, open(part, "wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
    except (URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {url} ({reason}). To proceed offline, download that file "
            f"elsewhere and put it at {zip_path} (the cache directory can be changed with the "
            "RECSTACK_CACHE environment variable), or extract it yourself and load the "
            "directory with 'movielens:DIR'",
            path=str(zip_path),
        ) from None
    part.replace(zip_path)
