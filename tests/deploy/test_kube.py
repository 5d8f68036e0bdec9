"""The chart and the examples against the real kube-apiserver (tests/cluster): every rendered object passes
server-side dry-run (the apiserver's OpenAPI/CRD schema validation, admission, RBAC escalation checks),
then is applied for real; `helm install` works; the operator's ServiceAccount can do what the operator
needs and nothing more (`kubectl auth can-i`); every YAML under examples/ applies cleanly."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_chart import FULL
from tests.deploy.tools import CHART, REPO, render

pytestmark = pytest.mark.kube

STUB_CRDS = sorted((Path(__file__).parent / "crds").glob("*.yaml"))
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}


@pytest.fixture(scope="module")
def crds(kube):
    """Apply the chart's CRDs (tuneops + kopf peering) and the test stubs for monitoring/Argo CD kinds.
    Returns {crd name: apiserver error} for the ones the apiserver rejected (tests needing them fail)."""
    rejected, names = {}, []
    for path in [*sorted((CHART / "crds").glob("*.yaml")), *STUB_CRDS]:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            # As JSON: kubectl's YAML 1.1 parser reads a bare `- n` (FineTuneJob status.attempts[].n) as a
            # bool; test_chart_crds_install_as_helm_does checks the YAML as helm sends it.
            r = apply(kube, [doc], "--server-side", "--force-conflicts", check=False)
            if r.returncode != 0:
                rejected[doc["metadata"]["name"]] = r.stderr.strip()
            else:
                names.append(doc["metadata"]["name"])
    for name in names:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    for kind in ("clusterkopfpeerings", "prometheusrules", "applications"):
        kube.wait_for(f"{kind} discovery", lambda k=kind: kube.kubectl("get", k, "-A", check=False).returncode == 0)
    return rejected


def need(rejected: dict, objs: list[dict]) -> None:
    """Fail (naming the apiserver's reason) when objs need a CRD the apiserver rejected."""
    for o in objs:
        group = o["apiVersion"].rpartition("/")[0]
        crd = f"{o['kind'].lower()}s.{group}"
        if crd in rejected:
            pytest.fail(f"{o['kind']} needs CRD {crd}, rejected by the apiserver: {rejected[crd][-400:]}")


def test_chart_crds_accepted_by_apiserver(kube, crds):
    assert not crds, "\n".join(f"{k}: {v[-400:]}" for k, v in crds.items())


def test_chart_crds_install_as_helm_does(kube, crds):
    """The CRD YAML exactly as `helm install` sends it (its YAML parser, not PyYAML) passes dry-run."""
    text = subprocess.run([str(kube.helm_path), "template", "x", str(CHART), "--include-crds"],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    crd_docs = [d for d in text.split("\n---") if "kind: CustomResourceDefinition" in d]
    assert len(crd_docs) == len(list((CHART / "crds").glob("*.yaml")))
    r = kube.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
                     input="\n---".join(crd_docs), check=False)
    assert r.returncode == 0, r.stderr


def apply(kube, objs: list[dict], *extra: str, check: bool = True):
    return kube.kubectl("apply", *extra, "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs), check=check)


def sa(release: str, ns: str) -> str:
    return f"system:serviceaccount:{ns}:{release}-tuneops-operator"


def can_i(kube, user: str, verb: str, resource: str, ns: str | None = None, sub: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", ns] if ns else ["--all-namespaces"]
    if sub:
        args.append(f"--subresource={sub}")
    r = kube.kubectl(*args, check=False)
    assert r.stdout.strip() in ("yes", "no"), r.stdout + r.stderr
    return r.stdout.strip() == "yes"


def test_default_render_dry_run_then_apply(kube, crds):
    ns = kube.create_namespace("chart")
    release = f"d{uuid.uuid4().hex[:6]}"
    objs = render(release=release, namespace=ns)
    out = apply(kube, objs, "--dry-run=server").stdout
    assert out.count("(server dry run)") == len(objs), out
    apply(kube, objs)
    name = f"{release}-tuneops-operator"
    got = kube.get("deployment", name, namespace=ns)
    assert got["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # kwok runs the pod: the Deployment rolls out, so the pod spec is admissible as written.
    kube.kubectl("rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=90s")


def test_full_render_dry_run_then_apply(kube, crds, tmp_path):
    """Every option on (MLflow on PostgreSQL/S3, monitoring, namespaced RBAC) is valid for the apiserver."""
    ns, w1, w2 = (kube.create_namespace(p) for p in ("chartfull", "watch", "watch"))
    release = f"f{uuid.uuid4().hex[:6]}"
    monitoring = {**FULL["monitoring"], "kubeStateMetrics": {"enabled": True, "serviceAccount": {"name": "ksm", "namespace": ns}}}
    values = {**FULL, "fullnameOverride": f"{release}-tuneops", "watchNamespaces": [w1, w2], "monitoring": monitoring}
    objs = render(values=values, release=release, namespace=ns, tmp=tmp_path)
    assert {"PrometheusRule", "ServiceMonitor", "PodMonitor", "Role"} <= {o["kind"] for o in objs}
    out = apply(kube, objs, "--dry-run=server").stdout
    assert out.count("(server dry run)") == len(objs), out
    apply(kube, objs)
    user = sa(release, ns)
    # Namespaced rules only where the operator watches.
    assert can_i(kube, user, "create", "jobs.batch", w1)
    assert can_i(kube, user, "patch", "kopfpeerings.kopf.dev", w2)
    assert not can_i(kube, user, "create", "jobs.batch", ns)
    assert not can_i(kube, user, "create", "jobs.batch", "default")
    assert can_i(kube, user, "list", "customresourcedefinitions.apiextensions.k8s.io")


def test_apiserver_rejects_a_broken_render(kube, crds):
    """The dry-run is a real check: a wrong field type in a rendered object is refused."""
    ns = kube.create_namespace("broken")
    objs = render(release="broken", namespace=ns)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    dep["spec"]["replicas"] = "two"
    r = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(dep), check=False)
    assert r.returncode != 0 and "replicas" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def installed(kube, crds):
    """`helm install` for real (default values), as a user would."""
    ns = kube.create_namespace("helm")
    release = f"h{uuid.uuid4().hex[:6]}"
    # --skip-crds: the crds fixture applied them (test_chart_crds_* check them as helm sends them).
    cmd = [str(kube.helm_path), "install", release, str(CHART), "-n", ns, "--wait", "--timeout", "3m", "--skip-crds",
           "--set", "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=kube.env)
    assert p.returncode == 0, p.stderr + p.stdout
    return release, ns


def test_helm_install_deploys_a_ready_operator(kube, installed):
    release, ns = installed
    dep = kube.get("deployment", f"{release}-tuneops-operator", namespace=ns)
    assert dep["status"].get("readyReplicas") == 1
    assert kube.get("clusterkopfpeering", f"{release}-tuneops")["metadata"]["name"]
    assert kube.get("prometheusrule", f"{release}-tuneops", namespace=ns)["spec"]["groups"]


# (verb, resource, subresource) the operator needs, in any namespace.
NEEDED = [
    ("watch", "finetunejobs.tuneops.io", None), ("patch", "finetunejobs.tuneops.io", "status"),
    ("patch", "modeldeployments.tuneops.io", "status"), ("create", "modelversions.tuneops.io", None),
    ("create", "jobs.batch", None), ("delete", "jobs.batch", None), ("watch", "pods", None),
    ("create", "configmaps", None), ("patch", "configmaps", None), ("create", "services", None),
    ("create", "serviceaccounts", None), ("create", "deployments.apps", None),
    ("patch", "deployments.apps", None), ("create", "horizontalpodautoscalers.autoscaling", None),
    ("create", "roles.rbac.authorization.k8s.io", None), ("create", "rolebindings.rbac.authorization.k8s.io", None),
    ("create", "events", None), ("create", "events.events.k8s.io", None),
]
# What it must not do: read credentials, run arbitrary pods, touch cluster-wide security or CRDs.
FORBIDDEN = [
    ("get", "secrets", None), ("list", "secrets", None), ("create", "pods", None), ("create", "pods", "exec"),
    ("create", "finetunejobs.tuneops.io", None), ("delete", "modelversions.tuneops.io", None),
    ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "namespaces", None), ("patch", "nodes", None), ("impersonate", "serviceaccounts", None),
    ("escalate", "roles.rbac.authorization.k8s.io", None), ("bind", "clusterroles.rbac.authorization.k8s.io", None),
]


def test_operator_serviceaccount_can_do_what_it_needs(kube, crds, installed):
    release, ns = installed
    user = sa(release, ns)
    # can-i resolves the resource through discovery: a CRD the apiserver rejected cannot be checked.
    checkable = [n for n in NEEDED if n[1].partition(".")[0] + "." + n[1].partition(".")[2] not in crds]
    missing = [f"{v} {r}{'/' + s if s else ''}" for v, r, s in checkable if not can_i(kube, user, v, r, "team-a", s)]
    assert not missing, f"{user} cannot: {missing}"
    need(crds, [{"apiVersion": "tuneops.io/v1alpha1", "kind": k} for k in ("FineTuneJob", "ModelDeployment")])
    assert can_i(kube, user, "patch", f"clusterkopfpeerings.kopf.dev/{release}-tuneops")
    assert can_i(kube, user, "list", "customresourcedefinitions.apiextensions.k8s.io")


def test_operator_serviceaccount_is_forbidden_the_rest(kube, installed):
    release, ns = installed
    user = sa(release, ns)
    allowed = [f"{v} {r}{'/' + s if s else ''}" for v, r, s in FORBIDDEN if can_i(kube, user, v, r, "team-a", s)]
    assert not allowed, f"{user} may, but should not: {allowed}"
    assert not can_i(kube, "system:serviceaccount:team-a:default", "create", "jobs.batch", "team-a")


def test_operator_can_grant_the_progress_role(kube, installed):
    """RBAC escalation check: the operator can create the per-job Role (get/patch one ConfigMap) it gives
    training pods, because it holds those permissions itself; it cannot grant secrets access."""
    release, ns = installed
    work = kube.create_namespace("grant")
    user = sa(release, ns)
    ok = kube.kubectl("create", "role", "progress", "--verb=get,patch", "--resource=configmaps",
                      "--resource-name=job-progress", "-n", work, f"--as={user}", "--dry-run=server", check=False)
    assert ok.returncode == 0, ok.stderr
    bad = kube.kubectl("create", "role", "steal", "--verb=get", "--resource=secrets", "-n", work,
                       f"--as={user}", "--dry-run=server", check=False)
    assert bad.returncode != 0 and "forbidden" in bad.stderr.lower(), bad.stderr


# ------------------------------------------------------------------------------------------- examples

def _example_sets() -> list[tuple[str, Path]]:
    """Each Kubernetes YAML under examples/: a kustomization folder is applied as its build, other files as
    they are. Files that are not Kubernetes objects (examples/dvc/dvc.yaml, a DVC pipeline) are not applied."""
    out = []
    for path in sorted((REPO / "examples").rglob("*.y*ml")):
        rel = str(path.relative_to(REPO))
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if path.name != "kustomization.yaml" and not all(isinstance(d, dict) and "kind" in d for d in docs):
            continue
        out.append((rel, path))
    return out


def _load(kube, path: Path) -> list[dict]:
    if path.name == "kustomization.yaml":
        text = kube.kubectl("kustomize", path.parent).stdout
    else:
        text = path.read_text()
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("rel,path", _example_sets(), ids=[r for r, _ in _example_sets()])
def test_example_applies(kube, crds, rel, path):
    objs = _load(kube, path)
    assert objs, f"{rel} holds no objects"
    ns = kube.create_namespace("ex")
    namespaces, rest = [], []
    for o in objs:
        (namespaces if o["kind"] == "Namespace" else rest).append(o)
        if o["kind"] not in CLUSTER_SCOPED:
            o["metadata"]["namespace"] = ns  # isolate: examples name real namespaces (ml, argocd)
    if namespaces:  # shared cluster: don't create `ml` for real, but the apiserver must accept it
        apply(kube, namespaces, "--dry-run=server")
    need(crds, rest)
    if rest:
        out = apply(kube, rest, "--dry-run=server").stdout
        assert out.count("(server dry run)") == len(rest), out
        apply(kube, rest)
        for o in (o for o in rest if "spec" in o):
            got = kube.get(o["kind"].lower() + "." + o["apiVersion"].split("/")[0]
                           if "/" in o["apiVersion"] and o["apiVersion"] != "v1" else o["kind"].lower(),
                           o["metadata"]["name"], namespace=ns)
            assert got["spec"] == o["spec"] or got["spec"].keys() >= o["spec"].keys()


# ------------------------------------------------------------------- the real operator, as the chart's SA

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sa_kubeconfig(kube, sa_name: str, ns: str, path: Path) -> Path:
    """A kubeconfig holding a token of the ServiceAccount: what the operator pod would authenticate with."""
    token = kube.kubectl("create", "token", sa_name, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [cluster], "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}]}))
    return path


def test_real_operator_runs_with_the_charts_rbac(kube, crds, tmp_path):
    """`tuneops operator`, started with the chart's namespaced install's arguments and authenticated as its
    ServiceAccount, reconciles a FineTuneJob (creates the training Job, writes status) with no 403, serves
    its liveness endpoint and exports its metrics."""
    import time
    import urllib.request

    need(crds, [{"apiVersion": "tuneops.io/v1alpha1", "kind": "FineTuneJob"}])
    ns, work = kube.create_namespace("opsys"), kube.create_namespace("opwork")
    release = f"r{uuid.uuid4().hex[:6]}"
    p = subprocess.run([str(kube.helm_path), "install", release, str(CHART), "-n", ns, "--skip-crds", "--wait",
                        "--timeout", "3m", "--set", f"watchNamespaces={{{work}}}"],
                       capture_output=True, text=True, timeout=240, env=kube.env)
    assert p.returncode == 0, p.stderr
    dep = kube.get("deployment", f"{release}-tuneops-operator", namespace=ns)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    metrics, health = _free_port(), _free_port()
    # The pod's own arguments, with local ports (many tests share this machine).
    args = [a for a in args if not a.startswith(("--metrics-port", "--liveness"))]
    args += [f"--metrics-port={metrics}", f"--liveness=http://127.0.0.1:{health}/healthz", "--log-format=plain"]
    env = {**kube.env, "KUBECONFIG": str(_sa_kubeconfig(kube, f"{release}-tuneops-operator", ns, tmp_path / "sa.kubeconfig"))}
    log = tmp_path / "operator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "operator", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        job = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
        job["metadata"]["namespace"] = work
        apply(kube, [job])

        def reconciled():
            assert proc.poll() is None, f"operator exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            got = kube.get("finetunejob", job["metadata"]["name"], namespace=work)
            return (got.get("status") or {}).get("phase")
        phase = kube.wait_for("the operator to write FineTuneJob status", reconciled, timeout=120)
        assert phase in ("Preparing", "Running", "Pending", "Evaluating", "Succeeded", "Failed")
        kube.wait_for("the training Job", lambda: kube.get("jobs", namespace=work)["items"], timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            assert "tuneops_operator_reconciles_total" in r.read().decode()
        time.sleep(1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()
    assert "403" not in text and "forbidden" not in text.lower(), text[-3000:]
