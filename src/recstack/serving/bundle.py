"""Bundles: one self-describing directory with everything the service needs.

    bundle/
      manifest.json     format, version, creation time, sha256 of every file
      pipeline.json     the PipelineConfig
      catalog/*.npy     item ids, popularity, freshness, categories
      users/*.npy       user ids and time-ordered histories
      models/<name>/    Recommender.save: config.json + weights.safetensors
      indexes/<name>/   index.json + index.faiss (or vectors.safetensors)
      matrices/<name>/  item-item CSR matrices as .npy
      extras/<name>/    other artefacts (e.g. a feature pipeline, CTR rankers), verbatim

Loading never unpickles: JSON, safetensors, `np.load(allow_pickle=False)` and Faiss's binary
format only; every file is checked against the manifest (a changed, missing or unlisted file is
an error), so a half-copied bundle is refused instead of half-served.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recstack import __version__
from recstack.index.base import VectorIndex
from recstack.index.factory import load_index
from recstack.models.base import Recommender
from recstack.pipeline.assets import Assets
from recstack.pipeline.catalog import ItemCatalog, UserStore
from recstack.pipeline.config import PipelineConfig
from recstack.pipeline.matrices import load_csr, save_csr
from recstack.pipeline.pipeline import Pipeline, build_pipeline

FORMAT = "recstack-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_KINDS = ("models", "indexes", "matrices", "extras")


class BundleError(ValueError):
    """A bundle is malformed, incomplete or was modified after export."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def write_bundle(out: str | Path, config: PipelineConfig, catalog: ItemCatalog, users: UserStore,
                 models: dict[str, Recommender] | None = None,
                 indexes: dict[str, VectorIndex] | None = None,
                 matrices: dict[str, sp.csr_matrix] | None = None,
                 extras: dict[str, str | Path] | None = None, version: str | None = None,
                 info: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a bundle directory at `out`.

    It is assembled in a temporary sibling directory and renamed into place, so `out` never
    holds a partial bundle. The pipeline is built once from the in-memory assets first, so a
    config that does not fit its assets fails here, not in the service.

    Args:
        version: free-form version label (default: a UTC timestamp).
        info: JSON-able facts recorded in the manifest (training data, metrics, ...).
        overwrite: replace an existing `out`.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    models, indexes, matrices, extras = models or {}, indexes or {}, matrices or {}, extras or {}
    extras = {k: Path(v) for k, v in extras.items()}
    build_pipeline(config, Assets(catalog, users, models, indexes, matrices, extras=extras))  # fail early
    version = version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config.save(tmp / "pipeline.json")
        catalog.save(tmp / "catalog")
        users.save(tmp / "users")
        for name, m in models.items():
            m.save(tmp / "models" / _safe(name))
        for name, ix in indexes.items():
            ix.save(tmp / "indexes" / _safe(name))
        for name, mat in matrices.items():
            save_csr(mat, tmp / "matrices" / _safe(name))
        for name, src in extras.items():
            shutil.copytree(src, tmp / "extras" / _safe(name))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "version": str(version),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recstack_version": __version__, "info": info or {},
            "assets": {"models": sorted(models), "indexes": sorted(indexes),
                       "matrices": sorted(matrices), "extras": sorted(extras)},
            "files": {f: _sha256(tmp / f) for f in _files(tmp)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _safe(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise BundleError(f"asset name {name!r} must be a plain, non-hidden file name")
    return name


def read_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The checked manifest of the bundle at `path`; with `verify`, every file's hash too."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{path}: no {MANIFEST}; not a recstack bundle")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mf}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mf}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{mf}: format version {manifest['format_version']} is newer than this "
                          f"recstack reads ({FORMAT_VERSION})")
    if verify:
        listed = manifest.get("files", {})
        present = set(_files(path)) - {MANIFEST}
        unlisted = sorted(present - set(listed))
        missing = sorted(set(listed) - present)
        if unlisted or missing:
            raise BundleError(f"{path}: files do not match the manifest (unlisted: {unlisted[:5]}, "
                              f"missing: {missing[:5]})")
        changed = [f for f, h in listed.items() if _sha256(path / f) != h]
        if changed:
            raise BundleError(f"{path}: files changed since export: {changed[:5]}")
    return manifest


@dataclass
class Bundle:
    """A loaded bundle: its manifest, pipeline config and assets; `pipeline` is built on load."""

    path: Path
    manifest: dict[str, Any]
    config: PipelineConfig
    assets: Assets
    pipeline: Pipeline = field(init=False)
    item_meta: list[dict[str, Any]] = field(init=False, repr=False)  # title / categories per item

    def __post_init__(self) -> None:
        self.pipeline = build_pipeline(self.config, self.assets)
        self.item_meta = item_metadata(self.assets.catalog)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def extra(self, name: str) -> Path:
        """Directory of extra artefact `name`."""
        p = self.path / "extras" / _safe(name)
        if not p.is_dir():
            raise BundleError(f"{self.path}: no extra artefact '{name}'")
        return p


def item_metadata(catalog: ItemCatalog) -> list[dict[str, Any]]:
    """Per item index, what a client shows next to a result: `title` and `categories` (each only
    when the catalogue has it). Built once per bundle, so answers only index a list."""
    n = catalog.n_items
    meta: list[dict[str, Any]] = [{} for _ in range(n)]
    if catalog.titles is not None:
        for m, t in zip(meta, catalog.titles.tolist(), strict=True):
            m["title"] = t
    names = catalog.category_names.tolist()
    if names and n:
        bits = np.asarray(catalog.category_bits, np.uint64)
        for c, name in enumerate(names[:64]):
            for i in np.flatnonzero(bits & np.uint64(1 << c)).tolist():
                meta[i].setdefault("categories", []).append(str(name))
    return meta


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load and check a bundle written by `write_bundle` (resolving symlinks, so a
    `current -> v2` link picks the version it points to at call time)."""
    path = Path(path).resolve()
    manifest = read_manifest(path, verify)
    names = manifest.get("assets", {})
    try:
        config = PipelineConfig.load(path / "pipeline.json")
        models = {n: Recommender.load(path / "models" / _safe(n), device="cpu") for n in names.get("models", [])}
        indexes = {n: load_index(path / "indexes" / _safe(n)) for n in names.get("indexes", [])}
        matrices = {n: load_csr(path / "matrices" / _safe(n)) for n in names.get("matrices", [])}
        extras = {n: path / "extras" / _safe(n) for n in names.get("extras", [])}
        assets = Assets(ItemCatalog.load(path / "catalog"), UserStore.load(path / "users"),
                        models, indexes, matrices, config.history_len, extras)
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{path}: cannot load bundle: {e}") from e
    return Bundle(path, manifest, config, assets)


def bundle_version(path: str | Path) -> str:
    """The version label of the bundle at `path` (manifest only, files not hashed)."""
    return str(read_manifest(path, verify=False)["version"])


def rebundle(src: str | Path, out: str | Path, config: PipelineConfig | None = None,
             version: str | None = None, overwrite: bool = False) -> Path:
    """A new bundle from an existing one's assets (no retraining), optionally with another
    pipeline config: e.g. a retuned re-ranking stage shipped and hot-swapped as a new version."""
    b = load_bundle(src)
    a = b.assets
    info = {**b.manifest.get("info", {}), "rebundled_from": {"path": str(b.path), "version": b.version}}
    return write_bundle(out, config or b.config, a.catalog, a.users, a.models, a.indexes, a.matrices,
                        a.extras, version=version, info=info, overwrite=overwrite)

