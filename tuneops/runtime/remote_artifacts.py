"""Artifacts on object storage (any fsspec URI: s3://, gs://, file://...): the training pod publishes its
output dir there, `tuneops serve --version <URI>` fetches it into a local cache.

Publishing uploads every file first and a `COMPLETE` manifest (relative path -> sha256) last, so a reader
that sees the marker sees every file; re-publishing the same files is a no-op. Fetching downloads into a
temp dir under `TUNEOPS_HOME/cache/artifacts/`, checks the hashes, renames into `<sha256 of the manifest>/`
(content-addressed: same artifact, same folder) and skips the download when that folder is complete.
Credentials come from the environment (the mounted Secret), never from the URI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from .paths import tuneops_home

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"


class ArtifactNotReady(ValueError):
    """The remote location has no COMPLETE manifest (an upload is missing or unfinished)."""


def is_remote(uri: str | Path | None) -> bool:
    """A `scheme://` URI fsspec opens (file:// included: e.g. a shared mount); plain paths are local."""
    return isinstance(uri, str) and "://" in uri


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fs(uri: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri.rstrip("/"))
    return fs, root.rstrip("/")


def publish(uri: str, items: dict[str, Path]) -> str:
    """Upload `items` ({remote name: local file or dir}) under `uri`, then `uri/COMPLETE` last; returns uri
    without a trailing slash. Idempotent: an identical COMPLETE already there means nothing is uploaded."""
    files: dict[str, Path] = {}
    for name, local in items.items():
        local = Path(local)
        if local.is_dir():
            files.update({f"{name}/{p.relative_to(local).as_posix()}": p
                          for p in sorted(local.rglob("*")) if p.is_file()})
        elif local.is_file():
            files[name] = local
    manifest = json.dumps({"files": {rel: _sha256(p) for rel, p in sorted(files.items())}}, indent=1,
                          sort_keys=True).encode()
    fs, root = _fs(uri)
    marker = f"{root}/{COMPLETE}"
    if fs.exists(marker) and fs.cat_file(marker) == manifest:
        log.info("%s already holds these %d files; not uploading", uri, len(files))
        return uri.rstrip("/")
    if fs.exists(marker):
        fs.rm(marker)  # replacing an older upload: readers must not trust a half-replaced folder
    for rel, path in files.items():
        destination = f"{root}/{rel}"
        fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)  # local fs needs parents; s3: no-op
        fs.put_file(str(path), destination)
    fs.pipe_file(marker, manifest)
    log.info("published %d files to %s", len(files), uri)
    return uri.rstrip("/")


def fetch(uri: str, *, home: Path | str | None = None) -> Path:
    """The local copy of the published folder `uri` (downloaded once; see module doc)."""
    fs, root = _fs(uri)
    marker = f"{root}/{COMPLETE}"
    try:
        manifest_bytes = fs.cat_file(marker)
    except FileNotFoundError as exc:
        raise ArtifactNotReady(f"{uri}: no {COMPLETE} marker: the upload is missing or unfinished") from exc
    files = json.loads(manifest_bytes)["files"]
    cache = tuneops_home(home) / "cache" / "artifacts"
    target = cache / hashlib.sha256(manifest_bytes).hexdigest()[:32]
    if (target / COMPLETE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        for rel, sha in files.items():
            local = staging / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(local))
            if _sha256(local) != sha:
                raise ArtifactNotReady(f"{uri}/{rel}: sha256 differs from {COMPLETE}: the folder changed mid-read")
        (staging / COMPLETE).write_bytes(manifest_bytes)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s into %s (%d files)", uri, target, len(files))
    return target
