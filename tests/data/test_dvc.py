"""examples/dvc: a real `dvc repro` / `dvc push` / `dvc pull` round trip with a local remote.

Needs the `dvc` command (the dev extra installs it; $TUNEOPS_DVC may point at one in another virtualenv).
The pipeline stage runs `python -m tuneops.cli` with this test's interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DVC = os.environ.get("TUNEOPS_DVC") or shutil.which("dvc")

pytestmark = pytest.mark.skipif(DVC is None, reason="dvc is not installed (pip install dvc, or set TUNEOPS_DVC)")


def dvc(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([DVC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_dvc_repro_push_pull(tmp_path):
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples" / "dvc", examples / "dvc")
    shutil.copy(REPO / "examples" / "smollm2-lora.yaml", examples / "smollm2-lora.yaml")
    (examples / "data").mkdir()
    dataset = examples / "data" / "support-tickets.jsonl"
    shutil.copy(REPO / "examples" / "data" / "support-tickets.jsonl", dataset)
    stage_dir, remote = examples / "dvc", tmp_path / "remote"

    dvc("init", "--no-scm", cwd=stage_dir)
    dvc("remote", "add", "-d", "local", str(remote), cwd=stage_dir)
    dvc("repro", cwd=stage_dir)
    manifest = json.loads((stage_dir / "prepared" / "manifest.json").read_text())
    metrics = json.loads((stage_dir / "data-metrics.json").read_text())
    assert metrics["version"] == manifest["version"] and metrics["read"] == 240
    assert "up to date" in dvc("repro", cwd=stage_dir).lower()

    dvc("push", cwd=stage_dir)
    assert any(p.is_file() for p in remote.rglob("*"))
    shutil.rmtree(stage_dir / "prepared")
    dvc("pull", cwd=stage_dir)
    restored = json.loads((stage_dir / "prepared" / "manifest.json").read_text())
    assert restored["version"] == manifest["version"]
    assert (stage_dir / "prepared" / "train.jsonl").stat().st_size > 0

    # A data change re-runs the stage and gives a new content-addressed version.
    lines = dataset.read_text().splitlines(keepends=True)
    dataset.write_text("".join(lines[:-10]))
    dvc("repro", cwd=stage_dir)
    changed = json.loads((stage_dir / "data-metrics.json").read_text())
    assert changed["read"] == 230 and changed["version"] != manifest["version"]
