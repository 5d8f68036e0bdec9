"""The tuneops CLI as a user runs it: a real subprocess, real files, real exit codes."""

import subprocess
import sys
from pathlib import Path

import yaml

from .cases import CASES

ROOT = Path(__file__).resolve().parent.parent


def tuneops(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_validate_examples_ok():
    result = tuneops("validate", *sorted(str(p) for p in (ROOT / "examples").glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert "FineTuneJob support-triage-smollm2 is valid" in result.stdout


def test_validate_multi_document_lists_every_error(tmp_path):
    bad = [c for c in CASES if c.id in ("lora-r-zero", "active-equals-preview", "inline-secret-env")]
    good = yaml.safe_load((ROOT / "examples" / "modelversion.yaml").read_text())
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all([bad[0].document(), good, bad[1].document(), None, bad[2].document()]))
    result = tuneops("validate", str(path))
    assert result.returncode == 1
    for case in bad:
        assert case.field in result.stderr
    assert f"{path}#1: spec.lora.r: must be > 0" in result.stderr
    assert "ModelVersion support-bot-v7 is valid" in result.stdout
    assert "3 invalid of 4 document(s)" in result.stderr


def test_validate_reports_yaml_syntax_and_missing_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = tuneops("validate", str(broken), str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "broken.yaml: cannot read" in result.stderr and "line" in result.stderr
    assert "nope.yaml: cannot read" in result.stderr


def test_crds_check_and_write(tmp_path):
    assert tuneops("crds", "--check").returncode == 0
    stale = tuneops("crds", "--check", "--dir", str(tmp_path))
    assert stale.returncode == 1 and "stale CRDs" in stale.stderr
    assert tuneops("crds", "--dir", str(tmp_path)).returncode == 0
    assert tuneops("crds", "--check", "--dir", str(tmp_path)).returncode == 0


def test_version():
    result = tuneops("version")
    assert result.returncode == 0 and "tuneops.io/v1alpha1" in result.stdout
