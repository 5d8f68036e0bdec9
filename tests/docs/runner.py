"""Run a page's marked blocks (see blocks.py) in order, in a copy of the repository, as a reader would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from .blocks import REPO, SHELL_LANGS, Block

DEFAULT_TIMEOUT = 300.0
DEFAULT_WAIT = 600.0  # a server loading a model on a loaded 2-core machine


def repo_copy(dest: Path) -> Path:
    """The files a fresh clone of this working tree has: tracked plus untracked-but-not-ignored files (so
    uncommitted docs are tested too), never .tuneops/, build outputs or caches."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():  # tracked but deleted in the working tree: a clone would not have it either
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


class Session:
    """One reader's shell: a working folder and environment shared by the blocks of a page."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path):
        self.cwd, self.env, self.logs = cwd, env, logs
        self.background: list[tuple[subprocess.Popen, Path]] = []
        self.timings: list[tuple[str, float]] = []

    def run(self, block: Block) -> None:
        marker = block.marker
        if marker is None or marker.mode in ("skip", "invalid"):
            return
        if marker.mode == "write":
            target = self.cwd / marker.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            return
        assert block.lang in SHELL_LANGS, f"{block.where}: only shell blocks can run (this is {block.lang!r})"
        if marker.mode == "background":
            self._start(block)
        else:
            self._run(block)

    def _run(self, block: Block) -> None:
        started = time.monotonic()
        timeout = block.marker.timeout or DEFAULT_TIMEOUT
        try:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=self.cwd, env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{block.where}: still running after {timeout:.0f}s:\n{block.text}"
                                 f"{_tail(str(exc.stdout or ''))}\n{_tail(str(exc.stderr or ''))}") from None
        self.timings.append((block.where, time.monotonic() - started))
        assert proc.returncode == 0, (f"{block.where}: exit {proc.returncode}:\n{block.text}\n--- stdout\n"
                                      f"{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}")
        if block.marker.expect is not None:
            assert block.marker.expect in proc.stdout, (
                f"{block.where}: expected {block.marker.expect!r} in the output:\n{_tail(proc.stdout)}")

    def _start(self, block: Block) -> None:
        started = time.monotonic()
        log = self.logs / f"background-{len(self.background)}.log"
        out = log.open("w")
        proc = subprocess.Popen(["bash", "-c", block.text], cwd=self.cwd, env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((proc, log))
        url, limit = block.marker.wait, block.marker.timeout or DEFAULT_WAIT
        deadline = time.monotonic() + limit
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{block.where}: exited {proc.returncode} before {url} answered:\n"
                                     f"{_tail(log.read_text())}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.where}: {url} did not answer 200 within {limit:.0f}s:\n"
                                     f"{_tail(log.read_text())}")
            time.sleep(1)
        self.timings.append((block.where, time.monotonic() - started))

    def close(self) -> None:
        """Stop what the page started in the background: SIGTERM its process group, then SIGKILL."""
        for proc, _ in self.background:
            _signal_group(proc, signal.SIGTERM)
        for proc, _ in self.background:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:  # the group may outlive its leader (bash started the server as a child)
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def port_free(url: str) -> bool:
    """True when nothing answers at the URL's host:port (a leftover server would make the test lie)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((parsed.hostname, parsed.port or 80)) != 0
