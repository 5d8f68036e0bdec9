"""`tuneops data prepare` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.cli", "data", "prepare", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_prepare_the_example_job(tmp_path):
    out = tmp_path / "prepared"
    # Run from another folder: the dataset path resolves against the YAML's folder, not the cwd.
    done = run(str(REPO / "examples" / "smollm2-lora.yaml"), "--out", str(out), "--tokenizer", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["read"] == 240 and manifest["counts"]["rejected"] == 0
    assert manifest["counts"]["validation"] > 0 and manifest["redactions"]["email"] > 0
    assert f"prepared {manifest['version']}" in done.stdout
    again = run(str(REPO / "examples" / "smollm2-lora.yaml"), "--out", str(out), "--tokenizer", "none", cwd=tmp_path)
    assert "up to date" in again.stdout and manifest["version"] in again.stdout


def test_bad_data_exits_1_naming_file_line_and_field(tmp_path):
    job = (REPO / "examples" / "smollm2-lora.yaml").read_text()
    (tmp_path / "job.yaml").write_text(job)
    (tmp_path / "data").mkdir()
    good = (REPO / "examples" / "data" / "support-tickets.jsonl").read_text().splitlines()[:20]
    bad = ['{"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}', '{"messages": [']
    (tmp_path / "data" / "support-tickets.jsonl").write_text("\n".join(good[:10] + bad + good[10:]))
    done = run("job.yaml", "--tokenizer", "none", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert "maxRejectedFraction" in done.stderr and "2 of 22 rows invalid" in done.stderr
    assert "data/support-tickets.jsonl:11: messages[1].role: bad_role" in done.stderr
    assert "data/support-tickets.jsonl:12: invalid_json" in done.stderr


def test_missing_dataset_and_not_a_job(tmp_path):
    shutil.copy(REPO / "examples" / "smollm2-lora.yaml", tmp_path / "job.yaml")
    done = run("job.yaml", "--tokenizer", "none", cwd=tmp_path)
    assert done.returncode == 1 and "support-tickets.jsonl: spec.dataset.source: no such file" in done.stderr
    (tmp_path / "other.yaml").write_text((REPO / "examples" / "modelversion.yaml").read_text())
    done = run("other.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "no FineTuneJob" in done.stderr
