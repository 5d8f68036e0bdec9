"""Marked shell blocks of the docs run (fast pages here; the getting-started page in test_getting_started)."""

import os

import pytest

from .blocks import REPO, SHELL_LANGS, MarkerError, blocks, doc_files, parse_marker
from .runner import Session, repo_copy

GETTING_STARTED = REPO / "docs" / "getting-started.md"
FAST_PAGES = [f for f in doc_files() if f != GETTING_STARTED
              and any(b.marker and b.marker.mode in ("run", "background") for b in blocks(f))]


def test_markers_parse_everywhere():
    for file in doc_files():
        blocks(file)  # raises MarkerError naming file:line


def test_marker_errors_name_the_problem():
    with pytest.raises(MarkerError, match="unknown test marker 'runn'"):
        parse_marker("runn", "x.md:3")
    with pytest.raises(MarkerError, match="background, wait URL"):
        parse_marker("background", "x.md:3")
    marker = parse_marker('run, expect "a, b", timeout 60', "x.md:3")
    assert (marker.expect, marker.timeout) == ("a, b", 60.0)


def test_every_getting_started_shell_block_is_marked():
    """Nothing on the newcomer page goes untested by accident: each shell block says run, background or skip."""
    unmarked = [b.where for b in blocks(GETTING_STARTED) if b.lang in SHELL_LANGS and b.marker is None]
    assert unmarked == []
    assert sum(1 for b in blocks(GETTING_STARTED) if b.marker and b.marker.mode == "run") >= 3


def test_fast_pages_include_the_reference_and_guides():
    names = {f.relative_to(REPO).as_posix() for f in FAST_PAGES}
    assert "docs/guides/bring-your-own-dataset.md" in names
    if (REPO / "docs/reference/finetunejob.md").exists():
        assert "docs/reference/finetunejob.md" in names


@pytest.mark.parametrize("page", FAST_PAGES, ids=[f.relative_to(REPO).as_posix() for f in FAST_PAGES])
def test_page_blocks_run(page, tmp_path):
    work = repo_copy(tmp_path / "repo")
    env = {**os.environ, "TUNEOPS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    session = Session(work, env, tmp_path)
    try:
        for block in blocks(work / page.relative_to(REPO)):
            session.run(block)
    finally:
        session.close()
