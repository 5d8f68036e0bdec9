"""The generated reference (docs/reference) is current, complete and deterministic."""

import shutil
import subprocess
import sys

from tuneops.api import KINDS
from tuneops.cli import build_parser
from tuneops.docs_reference import (
    REFERENCE_DIR, _cell, _prose, _sections, rendered_reference, stale_reference, walk_parsers,
    write_reference,
)

from .blocks import REPO


def test_committed_reference_is_current():
    assert stale_reference(REPO) == [], "run `tuneops docs reference` and commit docs/reference"


def _tuneops(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_check_lists_stale_and_stray_pages(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    missing = _tuneops("docs", "reference", "--check", "--root", str(tmp_path))
    assert missing.returncode == 1 and "finetunejob.md" in missing.stderr and "cli.md" in missing.stderr
    assert _tuneops("docs", "reference", "--root", str(tmp_path)).returncode == 0
    assert _tuneops("docs", "reference", "--check", "--root", str(tmp_path)).returncode == 0
    page = tmp_path / REFERENCE_DIR / "modelversion.md"
    page.write_text(page.read_text().replace("immutable", "mutable"))
    (tmp_path / REFERENCE_DIR / "old-kind.md").write_text("# gone\n")
    stale = _tuneops("docs", "reference", "--check", "--root", str(tmp_path))
    assert stale.returncode == 1
    assert "modelversion.md, old-kind.md" in stale.stderr and "finetunejob.md" not in stale.stderr


def test_an_edited_example_makes_the_page_stale(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    write_reference(tmp_path)
    example = tmp_path / "examples" / "modeldeployment.yaml"
    example.write_text(example.read_text().replace("autoPromotionSeconds: 300", "autoPromotionSeconds: 60"))
    assert stale_reference(tmp_path) == ["modeldeployment.md"]


def test_every_field_and_rule_is_documented():
    pages = rendered_reference(REPO)
    for kind in KINDS:
        page = pages[f"{kind.singular}.md"]
        seen, repeated = set(), []  # a model met again is documented once and linked (with what it holds)
        for root, model in (("spec", kind.spec), ("status", kind.status)):
            for section in _sections(model, root):
                if any(section.path.startswith(p + ".") for p in repeated):
                    continue
                assert f"### `{section.path}`" in page, f"{kind.kind}: no section for {section.path}"
                if section.model in seen:
                    repeated.append(section.path)
                    continue
                seen.add(section.model)
                for name, field in section.model.model_fields.items():
                    assert f"`{field.alias or name}`" in page, f"{kind.kind}: {section.path}.{name} missing"
                    if field.description:
                        assert _cell(_prose(field.description)) in page, name
                for rule in section.model.__rules__:
                    assert f"**{_prose(rule.message)}**" in page, f"{kind.kind}: rule {rule.message!r} missing"


def test_constraints_and_defaults_are_shown():
    page = rendered_reference(REPO)["finetunejob.md"]
    assert "| `r` | integer | `16` | > 0; <= 1024 | LoRA rank. |" in page
    assert "| `format` | string | **required** | one of `alpaca`, `sharegpt`, `openai-messages`" in page
    assert "pattern `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`" in page
    assert "`spec.quantization`: **method qlora needs quantization (e.g. {bits: 4, type: nf4})**" in page
    assert "at most 64 items" in page
    mv = rendered_reference(REPO)["modelversion.md"]
    assert "The spec is **immutable**" in mv


def test_cli_page_has_every_command():
    page = rendered_reference(REPO)["cli.md"]
    progs = [p.prog for p in walk_parsers(build_parser())]
    assert {"tuneops data prepare", "tuneops operator rbac", "tuneops versions promote", "tuneops docs reference"} \
        <= set(progs)
    for prog in progs:
        assert f"\n## {prog}\n" in page
    assert "--max-steps MAX_STEPS" in page


def test_output_does_not_depend_on_the_terminal(monkeypatch):
    first = rendered_reference(REPO)
    monkeypatch.setenv("COLUMNS", "37")
    assert rendered_reference(REPO) == first
    monkeypatch.delenv("COLUMNS")
    assert rendered_reference(REPO) == first
