"""The GitOps example repo: overlays build with real kustomize (kubectl), the tuneops resources pass
`tuneops validate`, and Argo CD sync waves put the project, then the CRDs + operator, before the CRs."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.deploy.tools import REPO, kube_tools

GITOPS = REPO / "examples" / "gitops"
OVERLAYS = sorted(p.parent for p in (GITOPS / "overlays").glob("*/kustomization.yaml"))
WAVE = "argocd.argoproj.io/sync-wave"


def kustomize(path) -> list[dict]:
    r = subprocess.run([str(kube_tools().kubectl), "kustomize", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def wave(obj) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(WAVE, "0"))


def argocd() -> dict[str, dict]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((GITOPS / "argocd").glob("*.yaml"))]
    return {d["metadata"]["name"]: d for d in docs}


def test_there_are_staging_and_prod_overlays():
    assert [p.name for p in OVERLAYS] == ["prod", "staging"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_builds_and_validates(overlay, tmp_path):
    objs = kustomize(overlay)
    env_ns = {"prod": "ml", "staging": "ml-staging"}[overlay.name]
    namespaces = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    assert namespaces == [env_ns]
    tuneops = [o for o in objs if o["apiVersion"].startswith("tuneops.io/")]
    assert {o["metadata"]["namespace"] for o in tuneops} == {env_ns}
    assert "ModelDeployment" in {o["kind"] for o in tuneops}
    # The same validation the CLI and the CRDs' CEL rules apply.
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(tuneops))
    r = subprocess.run([sys.executable, "-m", "tuneops.cli", "validate", str(out)], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    # Namespaces before the resources in them, CRs after wave -1 (the operator Application).
    for o in tuneops:
        assert wave(o) >= 1, o["metadata"]["name"]
        assert "SkipDryRunOnMissingResource=true" in o["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    assert all(wave(o) < min(map(wave, tuneops)) for o in objs if o["kind"] == "Namespace")


def test_prod_promotes_what_it_has():
    """Prod serves only ModelVersions committed to it; staging trains."""
    prod = kustomize(GITOPS / "overlays" / "prod")
    (md,) = [o for o in prod if o["kind"] == "ModelDeployment"]
    versions = {o["metadata"]["name"] for o in prod if o["kind"] == "ModelVersion"}
    assert md["spec"]["activeVersion"] in versions and md["spec"]["previewVersion"] in versions
    assert md["spec"]["promotion"]["mode"] == "manual"
    assert not [o for o in prod if o["kind"] == "FineTuneJob"]
    staging = kustomize(GITOPS / "overlays" / "staging")
    assert [o["kind"] for o in staging if o["kind"] == "FineTuneJob"] == ["FineTuneJob"]


def test_argocd_sync_waves_order_crds_and_operator_first():
    apps = argocd()
    project, operator = apps["ml-platform"], apps["tuneops"]
    workloads = [apps["ml-staging"], apps["ml-prod"]]
    assert project["kind"] == "AppProject" and operator["kind"] == "Application"
    assert wave(project) < wave(operator) < min(map(wave, workloads))
    # The operator app is the chart of this repo (CRDs included), server-side applied.
    assert operator["spec"]["source"]["path"] == "charts/tuneops"
    assert (REPO / operator["spec"]["source"]["path"] / "Chart.yaml").exists()
    assert "ServerSideApply=true" in operator["spec"]["syncPolicy"]["syncOptions"]
    # The root app-of-apps syncs this folder but not itself.
    root = apps["ml-root"]
    assert root["spec"]["source"]["path"] == "argocd" and root["spec"]["source"]["directory"]["exclude"] == "root.yaml"


def test_argocd_apps_stay_inside_their_project(tmp_path):
    apps = argocd()
    project = apps["ml-platform"]["spec"]
    allowed = {(d["server"], d["namespace"]) for d in project["destinations"]}
    for name, app in apps.items():
        if app["kind"] != "Application" or name == "ml-root":
            continue
        spec = app["spec"]
        assert spec["project"] == "ml-platform"
        assert spec["source"]["repoURL"] in project["sourceRepos"]
        assert (spec["destination"]["server"], spec["destination"]["namespace"]) in allowed, name
        if spec["source"]["repoURL"].endswith("ml-gitops.git"):
            assert (GITOPS / spec["source"]["path"] / "kustomization.yaml").exists(), name
    # Everything the chart renders (all options on) is a kind the project whitelists.
    from tests.deploy.test_chart import FULL
    from tests.deploy.tools import render
    white = {(k["group"], k["kind"]) for k in project["clusterResourceWhitelist"] + project["namespaceResourceWhitelist"]}
    for values in (None, FULL):
        for obj in render(values=values, tmp=tmp_path, include_crds=True):
            group = obj["apiVersion"].rpartition("/")[0]
            assert (group, obj["kind"]) in white, f"AppProject ml-platform does not allow {group}/{obj['kind']}"
