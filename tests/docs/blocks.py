"""Fenced code blocks of the markdown docs, and the markers that say how a test treats them.

A marker is an HTML comment on the line right above the fence (GitHub does not render it):

    <!-- test: run -->                                    run the block with bash; it must exit 0
    <!-- test: run, expect "category", timeout 3600 -->   ... its stdout must contain the text; time limit (s)
    <!-- test: background, wait http://127.0.0.1:8080/health -->
                                                          start it, wait until the URL answers 200; it is
                                                          stopped (SIGTERM to its process group) at the end
    <!-- test: write byod/alpaca.jsonl -->                write the block's text to that file (relative to
                                                          the working folder) before the next blocks run
    <!-- test: invalid -->                                a YAML block that `tuneops validate` must reject
    <!-- test: skip, needs a cluster -->                  not run (the reason is for the reader of the source)

Blocks run in document order, in one working folder, so a page reads as a script a newcomer would follow.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("run", "background", "write", "invalid", "skip")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<body>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


class MarkerError(ValueError):
    pass


@dataclass(frozen=True)
class Marker:
    mode: str
    expect: str | None = None
    wait: str | None = None
    path: str | None = None
    timeout: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: Marker | None = field(default=None)

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO) if self.file.is_relative_to(REPO) else self.file}:{self.line}"


def parse_marker(body: str, where: str) -> Marker:
    mode, rest = re.match(r"^\s*(\S+?)(?:,|\s+|$)(.*)$", body).groups()
    if mode not in MODES:
        raise MarkerError(f"{where}: unknown test marker {mode!r} (expected one of {', '.join(MODES)})")
    if mode == "skip":
        return Marker("skip", reason=rest.strip())
    if mode == "write":
        return Marker("write", path=rest.strip()) if rest.strip() else _missing(where, "write PATH")
    options: dict[str, str] = {}
    for token in (t.strip() for t in _split_options(rest)):
        if not token:
            continue
        key, _, value = token.partition(" ")
        if key not in ("expect", "wait", "timeout"):
            raise MarkerError(f"{where}: unknown marker option {key!r} (expect, wait, timeout)")
        options[key] = " ".join(shlex.split(value)) if key == "expect" else value.strip()
    if mode == "background" and "wait" not in options:
        return _missing(where, "background, wait URL")
    return Marker(mode, expect=options.get("expect"), wait=options.get("wait"),
                  timeout=float(options["timeout"]) if "timeout" in options else None)


def _split_options(text: str) -> list[str]:
    """Split on commas outside shell-style quotes (either kind; backslash escapes inside double quotes)."""
    parts, current, quote, escaped = [], "", None, False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote and ch == quote:
            quote = None
        elif not quote and ch in "'\"":
            quote = ch
        elif ch == "," and not quote:
            parts.append(current)
            current = ""
            continue
        current += ch
    return parts + [current]


def _missing(where: str, form: str) -> Marker:
    raise MarkerError(f"{where}: marker needs the form `<!-- test: {form} -->`")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, with the marker above it (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            # Blocks inside list items are indented: drop the fence's indentation, not the block's own.
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        i += 1  # the closing fence
        marker = None
        if start > 0 and (mm := _MARKER.match(lines[start - 1])):
            marker = parse_marker(mm["body"], f"{path}:{start}")
        out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", marker))
    return out


def doc_files() -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


SHELL_LANGS = ("bash", "sh", "shell", "console")
