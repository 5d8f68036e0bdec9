"""The test cluster itself behaves like Kubernetes (no tuneops code involved)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.kube.fixture import DELAY_ANNOTATION, RESULT_ANNOTATION

pytestmark = pytest.mark.kube


def _job(name: str, annotations: dict | None = None, backoff_limit: int = 0) -> str:
    return json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]},
            },
        },
    })


def _job_condition(kube, ns: str, name: str) -> str | None:
    """'Complete' or 'Failed' once the Job has finished, else None."""
    job = kube.get("job", name, namespace=ns)
    for c in job["status"].get("conditions", []):
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c["type"]
    return None


def _job_pods(kube, ns: str, name: str) -> list:
    return kube.get("pods", "-l", f"job-name={name}", namespace=ns)["items"]


def test_apiserver_ready(kube):
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["minor"] == "34"
    nodes = kube.get("nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["kwok-node-0"]
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert "Node" in kube.kubectl("get", "--raw", "/api/v1").stdout  # discovery works
    assert kube.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == "admin"


def test_deployment_pods_become_ready(kube):
    ns = kube.create_namespace("deploy")
    kube.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", ns)
    dep = kube.wait_for("deployment web available",
                        lambda: (d := kube.get("deployment", "web", namespace=ns))
                        ["status"].get("availableReplicas") == 2 and d, timeout=120)
    rs = kube.get("replicasets", namespace=ns)["items"]
    assert len(rs) == 1
    assert rs[0]["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]
    pods = kube.get("pods", "-l", "app=web", namespace=ns)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == "kwok-node-0"
        assert pod["status"]["phase"] == "Running"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs[0]["metadata"]["uid"]
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    # Scaling down deletes a pod for real (kwok removes terminating pods).
    kube.kubectl("scale", "deployment", "web", "--replicas=1", "-n", ns)
    kube.wait_for("one pod left", lambda: len(kube.get("pods", "-l", "app=web", namespace=ns)["items"]) == 1)


def test_job_completes(kube):
    ns = kube.create_namespace("job")
    kube.apply(_job("ok"), namespace=ns)
    assert kube.wait_for("job ok finished", lambda: _job_condition(kube, ns, "ok"), timeout=120) == "Complete"
    pods = _job_pods(kube, ns, "ok")
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    assert kube.get("job", "ok", namespace=ns)["status"]["succeeded"] == 1


def test_job_pod_fails_by_annotation(kube):
    ns = kube.create_namespace("jobfail")
    kube.apply(_job("bad", {RESULT_ANNOTATION: "fail", DELAY_ANNOTATION: "1s"}), namespace=ns)
    assert kube.wait_for("job bad finished", lambda: _job_condition(kube, ns, "bad"), timeout=120) == "Failed"
    pods = _job_pods(kube, ns, "bad")
    assert [p["status"]["phase"] for p in pods] == ["Failed"]
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


@pytest.mark.parametrize("phase, outcome", [("Succeeded", "Complete"), ("Failed", "Failed")])
def test_job_pod_held_then_finished_by_test(kube, phase, outcome):
    """result=hold keeps the pod Running until the test decides how it ends."""
    ns = kube.create_namespace("jobhold")
    kube.apply(_job("held", {RESULT_ANNOTATION: "hold"}), namespace=ns)
    pod = kube.wait_for("held pod running", lambda: [
        p for p in _job_pods(kube, ns, "held") if p["status"].get("phase") == "Running"], timeout=120)[0]
    name = pod["metadata"]["name"]
    # Still Running a little later, and the Job is not finished.
    time.sleep(2)
    assert kube.get("pod", name, namespace=ns)["status"]["phase"] == "Running"
    assert _job_condition(kube, ns, "held") is None
    kube.finish_pod(name, ns, phase=phase, exit_code=0 if phase == "Succeeded" else 3)
    assert kube.wait_for("job finished", lambda: _job_condition(kube, ns, "held"), timeout=120) == outcome
    pod = kube.get("pod", name, namespace=ns)
    assert pod["status"]["phase"] == phase


WIDGET_CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      names: {kind: Widget, plural: widgets, singular: widget}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  size: {type: integer}
""")


def test_children_of_custom_resource_are_garbage_collected(kube):
    kube.apply(WIDGET_CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=60s")
    ns = kube.create_namespace("gc")
    kube.wait_for("widgets served", lambda: kube.kubectl("get", "widgets", "-n", ns, check=False).returncode == 0)
    kube.apply("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n", namespace=ns)
    uid = kube.get("widget", "w", namespace=ns)["metadata"]["uid"]
    owner = [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": uid,
              "controller": True, "blockOwnerDeletion": True}]
    kube.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "child", "ownerReferences": owner}, "data": {"a": "b"}}),
               namespace=ns)
    kube.apply(json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "child", "ownerReferences": owner},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "child"}},
                 "template": {"metadata": {"labels": {"app": "child"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }), namespace=ns)
    kube.wait_for("child pod running", lambda: [
        p for p in kube.get("pods", "-l", "app=child", namespace=ns)["items"]
        if p["status"].get("phase") == "Running"], timeout=120)

    kube.kubectl("delete", "widget", "w", "-n", ns, "--wait=false")

    def gone(*what) -> bool:
        return kube.kubectl("get", *what, "-n", ns, check=False).returncode != 0
    kube.wait_for("configmap collected", lambda: gone("configmap", "child"), timeout=120)
    kube.wait_for("deployment collected", lambda: gone("deployment", "child"), timeout=120)
    kube.wait_for("pods collected", lambda: not kube.get("pods", "-l", "app=child", namespace=ns)["items"],
                  timeout=120)


def test_rbac_service_account_token(kube):
    ns = kube.create_namespace("rbac")
    kube.kubectl("create", "serviceaccount", "robot", "-n", ns)
    token = kube.kubectl("create", "token", "robot", "-n", ns, "--duration=10m").stdout.strip()
    as_robot = ("--token", token)
    who = kube.kubectl(*as_robot, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert who == f"system:serviceaccount:{ns}:robot"

    denied = kube.kubectl(*as_robot, "get", "configmaps", "-n", ns, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert "system:serviceaccount:" + ns + ":robot" in denied.stderr

    kube.kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", ns)
    kube.kubectl("create", "rolebinding", "robot-cm", "--role=cm-reader", f"--serviceaccount={ns}:robot", "-n", ns)
    kube.wait_for("RBAC grant visible",
                  lambda: kube.kubectl(*as_robot, "get", "configmaps", "-n", ns, check=False).returncode == 0)
    # Still forbidden outside the granted verbs / namespace.
    assert kube.kubectl(*as_robot, "create", "configmap", "x", "-n", ns, check=False).returncode != 0
    assert kube.kubectl(*as_robot, "get", "configmaps", "-n", "default", check=False).returncode != 0


def test_namespace_deletion_finishes(kube):
    ns = kube.create_namespace("del")
    kube.kubectl("create", "configmap", "x", "-n", ns, "--from-literal=a=b")
    kube.kubectl("delete", "namespace", ns, "--timeout=90s")
    assert kube.kubectl("get", "namespace", ns, check=False).returncode != 0


def test_devcluster_cli_up_env_down(kube, tmp_path):
    """`devcluster.py up/env/down` manage a second, detached cluster."""
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "cluster" / "devcluster.py")]
    state = tmp_path / "state"
    up = subprocess.run([*script, "up", "--state", str(state)], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith(f"export KUBECONFIG={state / 'admin.kubeconfig'} ")
        env = subprocess.run([*script, "env", "--state", str(state)], capture_output=True, text=True)
        assert env.stdout == up.stdout
        r = subprocess.run([str(kube.kubectl_path), "--kubeconfig", str(state / "admin.kubeconfig"),
                            "get", "nodes", "-o", "name"], capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == "node/kwok-node-0"
    finally:
        down = subprocess.run([*script, "down", "--state", str(state)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not (state / "pids.json").exists()
    assert subprocess.run([*script, "env", "--state", str(state)], capture_output=True, text=True).returncode == 1


def test_node_authorizer(kube):
    """--authorization-mode=Node,RBAC: a node identity may read a Secret only
    when a pod bound to that node uses it. STATE/node-token authenticates as
    system:node:kwok-node-0 (group system:nodes)."""
    ns = kube.create_namespace("nodeauthz")
    as_node = ("--token", (kube.state_dir / "node-token").read_text().strip())
    who = kube.kubectl(*as_node, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert who == "system:node:kwok-node-0"
    kube.kubectl("create", "secret", "generic", "used", "--from-literal=k=v", "-n", ns)
    kube.kubectl("create", "secret", "generic", "unused", "--from-literal=k=v", "-n", ns)
    kube.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "envFrom": [{"secretRef": {"name": "used"}}]}]},
    }), namespace=ns)
    kube.wait_for("pod bound", lambda: kube.get("pod", "p", namespace=ns)["spec"].get("nodeName"))

    kube.wait_for("node may read the secret its pod uses", lambda: kube.kubectl(
        *as_node, "get", "secret", "used", "-n", ns, check=False).returncode == 0)
    denied = kube.kubectl(*as_node, "get", "secret", "unused", "-n", ns, check=False)
    assert denied.returncode != 0
    assert "no relationship found between node 'kwok-node-0' and this object" in denied.stderr
    # In 1.34 a node may read only its own Node object ...
    assert kube.kubectl(*as_node, "get", "node", "kwok-node-0", check=False).returncode == 0
    listed = kube.kubectl(*as_node, "get", "nodes", check=False)
    assert listed.returncode != 0 and "cannot read all nodes" in listed.stderr
    # ... and NodeRestriction admission stops it from setting restricted labels on itself.
    r = kube.kubectl(*as_node, "label", "node", "kwok-node-0", "node-restriction.kubernetes.io/x=y", check=False)
    assert r.returncode != 0, r.stdout
    assert "is not allowed to modify labels" in r.stderr, r.stderr
