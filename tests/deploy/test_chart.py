"""The Helm chart renders (real helm v4) with default and non-default values, carries the repo's CRDs,
hardens the operator pod, and rejects bad values through values.schema.json."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.deploy.tools import CHART, REPO, helm, render

# Everything optional switched on, every knob moved off its default.
FULL = {
    "fullnameOverride": "acme",
    "operator": {"image": {"repository": "registry.acme.io/ml/tuneops-operator",
                           "digest": "sha256:" + "a" * 64},
                 "replicas": 2, "logLevel": "debug", "extraArgs": ["--priority=100"]},
    "watchNamespaces": ["ml", "ml-staging"],
    "defaults": {"trainingImage": "registry.acme.io/ml/tuneops-runtime:0.1.0-cuda12",
                 "servingImages": {"tgi": "ghcr.io/huggingface/text-generation-inference:3.3.6",
                                   "builtin": "registry.acme.io/ml/tuneops-runtime:0.1.0"}},
    "storage": {"credentialsSecret": "s3-creds", "hfTokenSecret": "hf-token",
                "s3EndpointUrl": "http://minio.storage:9000"},
    "mlflow": {"enabled": True,
               "backendStore": {"postgres": {"host": "pg.db", "passwordSecret": "mlflow-db"}},
               "artifacts": {"s3": {"bucket": "acme-mlflow", "credentialsSecret": "s3-creds"}},
               "persistence": {"enabled": False}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                   "prometheusRule": {"enabled": True, "errorRateThreshold": 0.02},
                   "kubeStateMetrics": {"enabled": True},
                   "grafanaDashboard": {"enabled": True}},
}


def by_kind(objs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"].get("namespace", "") + "/" + o["metadata"]["name"]): o for o in objs}


def kinds(objs):
    return sorted({o["kind"] for o in objs})


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def test_chart_crds_are_the_generated_crds():
    """charts/tuneops/crds/ must be byte-identical to crds/ (plus kopf's peering CRDs only)."""
    repo = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert repo, "crds/ is empty"
    stale = [n for n in repo if chart.get(n) != repo[n]]
    extra = sorted(set(chart) - set(repo))
    assert not stale, f"chart CRDs differ from crds/: {stale}; run: cp crds/*.yaml charts/tuneops/crds/"
    assert extra == ["kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"], extra


def test_helm_lint_strict(tmp_path):
    helm("lint", CHART, "--strict")
    (tmp_path / "full.json").write_text(json.dumps(FULL))
    helm("lint", CHART, "--strict", "-f", tmp_path / "full.json")


def test_default_render_is_a_hardened_operator():
    objs = render()
    assert kinds(objs) == ["ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                           "Deployment", "Service", "ServiceAccount"]
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/tuneops/tuneops-operator:0.1.0"  # tag defaults to appVersion
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["command"] == ["tuneops", "operator"]
    assert "--all-namespaces" in c["args"] and "--peering=tuneops" in c["args"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    # Rules are the operator's one rule list, verbatim.
    rules = yaml.safe_load((CHART / "files" / "operator-clusterrole.yaml").read_text())["rules"]
    assert one(objs, "ClusterRole")["rules"] == rules
    binding = one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tuneops-operator",
                                    "namespace": "tuneops-system"}]


def test_default_rbac_is_least_privilege():
    """No wildcards, no secrets, no cluster-admin-ish verbs (escalate/bind/impersonate)."""
    (role,) = [o for o in render() if o["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert "secrets" not in rule["resources"], "the operator only references Secrets by name"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule


def test_git_writeback_secrets_get_exactly_one_named_secret_each(tmp_path):
    values = {"rbac": {"gitWriteBackSecrets": [{"namespace": "ml", "name": "ml-deploy-git"},
                                               {"namespace": "team-b", "name": "gh-token"}]}}
    objs = render(values=values, tmp=tmp_path)
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Role"}
    assert set(roles) == {("ml", "tuneops-git-writeback-ml-deploy-git"), ("team-b", "tuneops-git-writeback-gh-token")}
    assert roles[("ml", "tuneops-git-writeback-ml-deploy-git")]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ml-deploy-git"], "verbs": ["get"]}]
    bindings = [o for o in objs if o["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == {name for _, name in roles}
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "tuneops-operator",
                                  "namespace": "tuneops-system"}] for b in bindings)
    # The cluster-wide role stays without Secrets.
    (cluster_role,) = [o for o in objs if o["kind"] == "ClusterRole"]
    assert all("secrets" not in r["resources"] for r in cluster_role["rules"])


def test_git_writeback_secret_entries_are_validated(tmp_path):
    proc = helm("template", "t", CHART, "--set", "rbac.gitWriteBackSecrets[0].namespace=ml",
                "--set", "rbac.gitWriteBackSecrets[0].name=Bad_Name", check=False)
    assert proc.returncode != 0 and "gitWriteBackSecrets" in proc.stderr


def test_full_values_render_everything(tmp_path):
    objs = render(values=FULL, release="prod", namespace="tuneops", tmp=tmp_path)
    assert {"PersistentVolumeClaim"}.isdisjoint(kinds(objs))  # persistence off
    assert {"PrometheusRule", "ServiceMonitor", "PodMonitor", "Role", "RoleBinding",
            "KopfPeering"} <= set(kinds(objs))
    dep = one(objs, "Deployment", "acme-operator")
    assert dep["spec"]["replicas"] == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.acme.io/ml/tuneops-operator@sha256:" + "a" * 64
    assert "--namespace=ml" in c["args"] and "--namespace=ml-staging" in c["args"]
    assert "--all-namespaces" not in c["args"] and {"--verbose", "--priority=100"} <= set(c["args"])
    # Namespaced rules moved to a Role per watched namespace; the ClusterRole keeps only cluster-wide ones.
    roles = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Role"}
    assert sorted(roles) == ["ml", "ml-staging"]
    assert any("jobs" in r["resources"] for r in roles["ml"]["rules"])
    cluster_resources = {r for rule in one(objs, "ClusterRole", "acme-operator")["rules"] for r in rule["resources"]}
    assert cluster_resources <= {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "kopfpeerings"}
    # Settings reach the operator.
    cfg = one(objs, "ConfigMap", "acme-operator")["data"]
    assert cfg["TUNEOPS_MLFLOW_URI"] == "http://acme-mlflow.tuneops.svc:5000"
    assert cfg["TUNEOPS_STORAGE_CREDENTIALS_SECRET"] == "s3-creds"
    assert cfg["TUNEOPS_TRAINING_IMAGE"].endswith("0.1.0-cuda12")
    # MLflow on PostgreSQL + S3, password from the existing Secret, never inline.
    ml = one(objs, "Deployment", "acme-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--backend-store-uri=postgresql://mlflow:$(MLFLOW_DB_PASSWORD)@pg.db:5432/mlflow" in ml["args"]
    assert "--artifacts-destination=s3://acme-mlflow/mlflow" in ml["args"]
    pw = next(e for e in ml["env"] if e["name"] == "MLFLOW_DB_PASSWORD")
    assert pw["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert one(objs, "ClusterRole", "acme-kube-state-metrics")["rules"][0]["verbs"] == ["list", "watch"]
    assert one(objs, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = one(objs, "PrometheusRule")["spec"]["groups"]
    alerts = {r["alert"]: r for g in rules for r in g["rules"]}
    assert "> 0.02" in alerts["TuneopsServingErrorRateHigh"]["expr"]
    dash = one(objs, "ConfigMap", "acme-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["tuneops.json"])["uid"] == "tuneops-overview"


def test_mlflow_defaults_to_sqlite_on_a_kept_pvc():
    objs = render("mlflow.enabled=true")
    pvc = one(objs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    args = one(objs, "Deployment", "tuneops-mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args
    assert one(objs, "Service", "tuneops-mlflow")["spec"]["ports"][0]["port"] == 5000


def test_config_change_rolls_the_operator():
    def checksum(*sets):
        dep = one(render(*sets), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert checksum() != checksum("defaults.mlflowUri=http://mlflow.example:5000")


BAD_VALUES = [
    ("operator.replicas=two", "replicas"),
    ("operator.logLevel=verbose", "logLevel"),
    ("operator.imagee.tag=x", "imagee"),
    ("operator.image.digest=sha256:nothex", "digest"),
    ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
    ("monitoring.prometheusRule.errorRateThreshold=2", "errorRateThreshold"),
    ("monitoring.serviceMonitor.interval=often", "interval"),
    ("mlflow.persistence.size=ten", "size"),
    ("defaults.mlflowUri=mlflow:5000", "mlflowUri"),
    ("storage.credentialsSecret=Bad_Secret", "credentialsSecret"),
]


@pytest.mark.parametrize("setting,field", BAD_VALUES, ids=[b[0].split("=")[0] for b in BAD_VALUES])
def test_bad_values_fail_schema(setting, field):
    r = helm("template", "x", CHART, "--set", setting, check=False)
    assert r.returncode != 0, f"{setting} was accepted"
    assert "schema" in r.stderr and field in r.stderr, r.stderr


def test_postgres_without_password_secret_fails():
    r = helm("template", "x", CHART, "--set", "mlflow.enabled=true,mlflow.backendStore.postgres.host=pg",
             check=False)
    assert r.returncode != 0 and "passwordSecret is required" in r.stderr, r.stderr


def _operator_rbac() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.cli", "operator", "rbac"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_chart_rules_equal_tuneops_operator_rbac():
    """One source of truth: the chart's ClusterRole rules are what `tuneops operator rbac` prints."""
    r = _operator_rbac()
    if r.returncode != 0 and ("invalid choice" in r.stderr or "operator" not in r.stdout + r.stderr
                              or "No module named" in r.stderr):
        pytest.skip(f"`tuneops operator rbac` not available yet: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr
    printed = [d for d in yaml.safe_load_all(r.stdout) if d]
    role = next(d for d in printed if d.get("kind") == "ClusterRole")
    chart_rules = yaml.safe_load((CHART / "files" / "operator-clusterrole.yaml").read_text())["rules"]
    assert chart_rules == role["rules"], (
        "charts/tuneops/files/operator-clusterrole.yaml is stale: "
        "tuneops operator rbac > charts/tuneops/files/operator-clusterrole.yaml")


def test_package_is_installable(tmp_path):
    """`helm package` (what the release workflow publishes) produces a chart that renders."""
    helm("package", CHART, "-d", tmp_path)
    (tgz,) = tmp_path.glob("tuneops-*.tgz")
    out = helm("template", "pkg", tgz, "--include-crds").stdout
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d and d["kind"] == "CustomResourceDefinition"}
    assert {"finetunejobs.tuneops.io", "modelversions.tuneops.io", "modeldeployments.tuneops.io"} <= names


def test_configmap_sets_what_the_operator_reads():
    """The env names the chart sets are the ones tuneops/operator/settings.py reads."""
    settings = REPO / "tuneops" / "operator" / "settings.py"
    if not settings.exists():
        pytest.skip("tuneops/operator/settings.py not there yet")
    import re
    read = set(re.findall(r"env\.get\(\s*\"(TUNEOPS_[A-Z_]+)\"", settings.read_text()))
    cfg = one(render(), "ConfigMap", "tuneops-operator")["data"]
    wanted = {"TUNEOPS_TRAINING_IMAGE", "TUNEOPS_SERVE_IMAGE", "TUNEOPS_TGI_IMAGE", "TUNEOPS_MLFLOW_URI"}
    assert wanted <= read, f"the operator no longer reads {sorted(wanted - read)}"
    assert wanted <= set(cfg)


def test_kopf_peering_crds_equal_the_operators():
    """The chart's kopf peering CRDs are what `tuneops operator rbac --peering-crds` prints."""
    r = subprocess.run([sys.executable, "-m", "tuneops.cli", "operator", "rbac", "--peering-crds"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    theirs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(r.stdout)
              if d and d["kind"] == "CustomResourceDefinition"}
    ours = {}
    for path in (CHART / "crds").glob("kopf.dev_*.yaml"):
        doc = yaml.safe_load(path.read_text())
        ours[doc["metadata"]["name"]] = doc
    assert ours == theirs


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_operator_args_parse_with_the_operator_cli(values, tmp_path):
    """The Deployment's command line is accepted by `tuneops operator`'s own argument parser."""
    import argparse

    from tuneops.commands import operator as operator_cmd

    objs = render(values=values, release="cli", tmp=tmp_path)
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator"))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    parser = argparse.ArgumentParser(prog="tuneops")
    operator_cmd.register(parser.add_subparsers(dest="command"))
    assert c["command"][0] == "tuneops"
    args = parser.parse_args([*c["command"][1:], *c["args"]])  # SystemExit(2) on an unknown flag
    assert args.func is operator_cmd.cmd_run
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert args.liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    if values is None:
        assert args.all_namespaces and args.peering == "cli-tuneops" and not args.standalone
    else:
        assert args.namespace == FULL["watchNamespaces"] and args.verbose and args.priority == 100
        peerings = {o["metadata"]["namespace"]: o["metadata"]["name"] for o in objs if o["kind"] == "KopfPeering"}
        assert peerings == {ns: args.peering for ns in FULL["watchNamespaces"]}
