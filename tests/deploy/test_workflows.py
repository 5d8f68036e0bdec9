"""The GitHub workflows pass actionlint (real binary, when installed) and do what they claim: CI runs the
CRD freshness check, chart lint/render and the tests; images build both Dockerfiles; the promotion
workflow's edit step (run here for real on a copy of the GitOps example) promotes a version correctly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import REPO, kube_tools

WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the `on:` key as True
    return doc


def runs(doc: dict) -> str:
    return "\n".join(s.get("run", "") for job in doc["jobs"].values() for s in job["steps"])


def actionlint() -> str:
    for cand in (shutil.which("actionlint"), os.environ.get("GOBIN", "") + "/actionlint",
                 str(Path.home() / "go" / "bin" / "actionlint")):
        if cand and Path(cand).is_file():
            return cand
    pytest.skip("actionlint not installed (go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12)")


def test_actionlint_clean():
    r = subprocess.run([actionlint(), "-color=false"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_mistakes(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    bad = tmp_path / ".github" / "workflows" / "bad.yaml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ github.event.pull_request.title }}\n      - uses: actions/checkout\n")
    r = subprocess.run([actionlint(), "-color=false", str(bad)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "untrusted" in r.stdout, r.stdout


def test_ci_covers_lint_tests_crds_and_chart():
    ci = load("ci.yaml")
    assert {"push", "pull_request"} <= set(ci["on"])
    text = runs(ci)
    for needle in ("tuneops crds --check", "diff -r --exclude='kopf.dev_*' crds charts/tuneops/crds",
                   "helm lint charts/tuneops --strict", "helm template", "hadolint docker/*.Dockerfile",
                   "actionlint", "pytest tests/deploy", "bash scripts/test"):
        assert needle in text, needle


def test_images_workflow_builds_every_dockerfile():
    wf = load("images.yaml")
    matrix = wf["jobs"]["build"]["strategy"]["matrix"]["image"]
    assert sorted(f"{m}.Dockerfile" for m in matrix) == sorted(p.name for p in (REPO / "docker").glob("*.Dockerfile"))
    build = next(s for s in wf["jobs"]["build"]["steps"] if s.get("id") == "build")
    assert build["with"]["push"] == "${{ github.event_name != 'pull_request' }}"  # PRs build, never push


def test_chart_release_publishes_oci():
    text = runs(load("chart-release.yaml"))
    assert "helm package charts/tuneops" in text and 'helm push dist/tuneops-*.tgz "oci://ghcr.io/' in text
    assert "tuneops crds --check" in text


def _promote(gitops: Path, version: str, mv: dict, tmp: Path) -> subprocess.CompletedProcess:
    """Run the workflow's `edit` step script with bash, as the runner would."""
    step = next(s for s in load("promote.yaml")["jobs"]["promote"]["steps"] if s.get("id") == "edit")
    (tmp / "mv.json").write_text(json.dumps(mv))
    env = {**os.environ, "GITOPS_DIR": str(gitops), "VERSION": version}
    script = step["run"].replace("git diff --stat", "true")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=60)


def _staging_mv(version: str, number: int) -> dict:
    mv = yaml.safe_load((REPO / "examples/gitops/overlays/prod/modelversions/support-bot-v8.yaml").read_text())
    mv["metadata"] = {"name": version, "namespace": "ml-staging", "uid": "x", "managedFields": [{}]}
    mv["spec"]["version"] = number
    mv["status"] = {"phase": "Ready", "evaluation": {"verdict": "Passed"}}
    return mv


def _prod(gitops: Path) -> list[dict]:
    r = subprocess.run([str(kube_tools().kubectl), "kustomize", str(gitops / "overlays" / "prod")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.mark.parametrize("version,number", [("support-bot-v9", 9), ("support-bot-v8", 8)])
def test_promotion_edit_step(tmp_path, version, number):
    gitops = tmp_path / "gitops"
    shutil.copytree(REPO / "examples" / "gitops", gitops)
    r = _promote(gitops, version, _staging_mv(version, number), tmp_path)
    assert r.returncode == 0, r.stderr
    objs = _prod(gitops)
    (md,) = [o for o in objs if o["kind"] == "ModelDeployment"]
    assert md["spec"]["activeVersion"] == version
    assert md["spec"].get("previewVersion") != version  # v8 was the preview: dropped
    (mv,) = [o for o in objs if o["kind"] == "ModelVersion" and o["metadata"]["name"] == version]
    assert mv["metadata"]["namespace"] == "ml" and "status" not in mv and "uid" not in mv["metadata"]
    out = tmp_path / "prod.yaml"
    out.write_text(yaml.safe_dump_all(o for o in objs if o["apiVersion"].startswith("tuneops.io/")))
    v = subprocess.run([sys.executable, "-m", "tuneops.cli", "validate", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    # Idempotent: running it again changes nothing.
    before = (gitops / "overlays/prod/kustomization.yaml").read_text()
    assert _promote(gitops, version, _staging_mv(version, number), tmp_path).returncode == 0
    assert (gitops / "overlays/prod/kustomization.yaml").read_text() == before
