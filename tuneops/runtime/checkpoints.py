"""Checkpoints that survive preemption: a `COMPLETE` marker written last, resume from the newest complete
one, keep-last-N, and an optional mirror on object storage (spec.storage.checkpoints, any fsspec URI).

The HF Trainer writes `checkpoint-<step>/` in place, so a pod killed mid-save leaves a partial folder; the
marker (written after the Trainer's on_save, i.e. after weights, optimizer, scheduler, RNG and
trainer_state) is what makes a checkpoint trustworthy. Remote copies upload every file first, then the marker.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from .atomic import write_json_atomic
from .progress import now_rfc3339

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path | str) -> int:
    match = CHECKPOINT_RE.match(Path(str(path).rstrip("/")).name)
    if not match:
        raise ValueError(f"{path}: not a checkpoint-<step> folder")
    return int(match.group(1))


def _checkpoint_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(directory: Path) -> list[Path]:
    return [p for p in _checkpoint_dirs(Path(directory)) if (p / COMPLETE).is_file()]


def latest_complete_checkpoint(directory: Path) -> Path | None:
    complete = complete_checkpoints(directory)
    return complete[-1] if complete else None


def mark_complete(checkpoint: Path) -> None:
    write_json_atomic(checkpoint / COMPLETE, {"step": checkpoint_step(checkpoint), "completed": now_rfc3339()})


def remove_incomplete(directory: Path) -> list[Path]:
    """Partial checkpoints (no marker) are leftovers of a crash: never resume from them."""
    removed = [p for p in _checkpoint_dirs(Path(directory)) if not (p / COMPLETE).is_file()]
    for path in removed:
        log.warning("removing incomplete checkpoint %s (no %s marker)", path, COMPLETE)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def prune(directory: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` complete checkpoints."""
    old = complete_checkpoints(Path(directory))[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


class RemoteCheckpoints:
    """A mirror of checkpoint-<step>/ folders under `<uri>/<job>/` on any fsspec filesystem (s3://, gs://,
    file://...). Credentials come from the environment (the mounted Secret), never from the URI."""

    def __init__(self, uri: str, job_name: str | None):
        """job_name None: `uri` is already the job's own prefix (TUNEOPS_CHECKPOINT_URI)."""
        import fsspec

        self.uri = f"{uri.rstrip('/')}/{job_name}" if job_name else uri.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.uri)
        self.root = root.rstrip("/")

    def _remote_checkpoints(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        self.fs.invalidate_cache(self.root)
        names = [p.rstrip("/") for p in self.fs.ls(self.root, detail=False)]
        dirs = [p for p in names if CHECKPOINT_RE.match(p.rsplit("/", 1)[-1])]
        return sorted(dirs, key=checkpoint_step)

    def complete(self) -> list[str]:
        return [p for p in self._remote_checkpoints() if self.fs.exists(f"{p}/{COMPLETE}")]

    def push(self, checkpoint: Path, keep: int) -> str:
        remote = f"{self.root}/{checkpoint.name}"
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != COMPLETE)
        for path in files:
            destination = f"{remote}/{path.relative_to(checkpoint).as_posix()}"
            self.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)  # local fs needs parents; s3: no-op
            self.fs.put_file(str(path), destination)
        self.fs.pipe_file(f"{remote}/{COMPLETE}", (checkpoint / COMPLETE).read_bytes())
        for old in self.complete()[:-keep] if keep > 0 else []:
            self.fs.rm(old, recursive=True)
        return remote

    def pull_latest(self, local_dir: Path) -> Path | None:
        """Download the newest complete remote checkpoint into local_dir (atomically); None if none."""
        complete = self.complete()
        if not complete:
            return None
        remote = complete[-1]
        name = remote.rsplit("/", 1)[-1]
        target = Path(local_dir) / name
        if (target / COMPLETE).is_file():
            return target
        local_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=local_dir))
        try:
            for path in self.fs.find(remote):
                relative = path[len(remote.rstrip("/")) + 1:]
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(path, str(staging / relative))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


CHECKPOINT_URI_ENV = "TUNEOPS_CHECKPOINT_URI"


def remote_checkpoints(spec_uri: str | None, job_name: str) -> RemoteCheckpoints | None:
    """In a pod the operator is the authority: $TUNEOPS_CHECKPOINT_URI (`<checkpoints>/<ns>/<job>/`) is the
    job's prefix as is. Embedded runs (no env) mirror to `<spec.storage.checkpoints>/<job>/`."""
    if env := os.environ.get(CHECKPOINT_URI_ENV):
        return RemoteCheckpoints(env, None)
    return RemoteCheckpoints(spec_uri, job_name) if spec_uri else None
