"""Relative links in README.md and docs/ point at files that exist, and `#anchors` at headings that exist
(GitHub's anchor rules), so moving or renaming a page or a heading breaks a test, not a reader's click."""

import re
from collections import Counter

import pytest

from tuneops.docs_reference import anchor

from .blocks import REPO, doc_files

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(path):
    """The lines outside fenced blocks (links in code are not links)."""
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside = not inside
        elif not inside:
            yield line


def anchors(path) -> set[str]:
    seen: Counter = Counter()
    out = set()
    for line in _prose(path):
        if m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = anchor(m.group(1))
            out.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return out


_CODE_SPAN = re.compile(r"(`+).+?\1")
LINKS = [(f, target) for f in doc_files() for line in _prose(f) for target in _LINK.findall(_CODE_SPAN.sub("", line))
         if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("source,target", LINKS, ids=[f"{f.relative_to(REPO)}->{t}" for f, t in LINKS])
def test_link_resolves(source, target):
    path, _, fragment = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    assert file.exists(), f"{source.relative_to(REPO)}: {target}: no such file"
    if fragment and file.suffix == ".md":
        assert fragment in anchors(file), f"{source.relative_to(REPO)}: {target}: no such heading"


def test_anchor_rules():
    assert anchor("`spec.env[]`") == "specenv"
    assert anchor("kubectl get columns") == "kubectl-get-columns"
    assert anchor("Runs, registry and promotion") == "runs-registry-and-promotion"
