"""Every tuneops resource shown in the docs (```yaml blocks in README.md and docs/**) validates with the code
of `tuneops validate`; blocks marked `<!-- test: invalid -->` must be rejected."""

import pytest
import yaml

from tuneops.api import BY_KIND
from tuneops.cli import main

from .blocks import REPO, blocks, doc_files

YAML_BLOCKS = [b for f in doc_files() for b in blocks(f) if b.lang in ("yaml", "yml")]


def _is_resource(doc) -> bool:
    return isinstance(doc, dict) and (str(doc.get("apiVersion", "")).startswith("tuneops.io/")
                                      or doc.get("kind") in BY_KIND)


def test_docs_have_resources():
    assert sum(1 for b in YAML_BLOCKS if any(map(_is_resource, yaml.safe_load_all(b.text)))) >= 5


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_block(block, tmp_path, capsys):
    if block.marker and block.marker.mode == "skip":
        pytest.skip(block.marker.reason)
    try:
        docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.YAMLError as exc:
        pytest.fail(f"{block.where}: not YAML: {exc}")
    resources = [d for d in docs if _is_resource(d)]
    if not resources:
        assert not (block.marker and block.marker.mode == "invalid"), f"{block.where}: no resource to reject"
        return
    path = tmp_path / "block.yaml"
    path.write_text(yaml.safe_dump_all(resources))
    code = main(["validate", "-q", str(path)])
    err = capsys.readouterr().err
    if block.marker and block.marker.mode == "invalid":
        assert code == 1, f"{block.where}: marked invalid, but `tuneops validate` accepts it"
    else:
        assert code == 0, f"{block.where} (line numbers relative to the block):\n{err}"
