"""The generated ClusterRole is enough: the operator, logged in as a ServiceAccount bound only to it, runs a
FineTuneJob to its Job and a ModelDeployment to Healthy (a missing verb would surface as a 403)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.operator.conftest import HOLD, REPO, get_json, wait
from tests.operator.factories import example
from tuneops.operator.rbac import cluster_role, cluster_role_binding

pytestmark = pytest.mark.kube


def _sa_kubeconfig(kube, ns: str, sa: str, path) -> str:
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster and "certificate-authority-data" not in cluster:
        cluster = {"server": cluster["server"], "certificate-authority-data": base64.b64encode(
            open(cluster["certificate-authority"], "rb").read()).decode()}
    token = kube.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
              "clusters": [{"name": "c", "cluster": cluster}],
              "users": [{"name": sa, "user": {"token": token}}],
              "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": ns}}]}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_operator_runs_with_only_its_cluster_role(crds, tmp_path):
    kube = crds
    ns = kube.create_namespace("rbac")
    kube.kubectl("create", "serviceaccount", "tuneops-operator", "-n", ns)
    role = cluster_role(f"tuneops-operator-{ns}")
    kube.kubectl("apply", "-f", "-", input=json.dumps(role))
    kube.kubectl("apply", "-f", "-", input=json.dumps(
        cluster_role_binding("tuneops-operator", ns, f"tuneops-operator-{ns}")))
    kubeconfig = _sa_kubeconfig(kube, ns, "tuneops-operator", tmp_path / "sa.kubeconfig")
    assert kube.kubectl("auth", "can-i", "get", "secrets", "-n", ns,
                        "--as", f"system:serviceaccount:{ns}:tuneops-operator", check=False).stdout.strip() == "no"

    mv = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "bot-v1"},
          "spec": {"model": "bot", "version": 1, "baseModel": {"family": "llama3", "source": {"hf": "org/base"}},
                   "adapter": {"uri": "s3://m/bot/1"}, "evaluation": {"verdict": "Passed"}}}
    md = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "bot"},
          "spec": {"model": "bot", "activeVersion": "bot-v1", "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}}
    doc = example("smollm2-lora.yaml")
    doc["metadata"] = {"name": "least"}
    for obj in (mv, md, doc):
        kube.apply(json.dumps(obj), namespace=ns)

    env = {**os.environ, "KUBECONFIG": kubeconfig, "TUNEOPS_TRAINING_POD_ANNOTATIONS": json.dumps(HOLD)}
    with open(tmp_path / "operator.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "operator", "--standalone", "-n", ns,
                                 "--metrics-port", "0", "--liveness", "", "--log-format", "plain"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait("Job created", lambda: get_json(kube, "job", "least-r1", namespace=ns), timeout=120)
            wait("role for the trainer", lambda: get_json(kube, "rolebinding", "least-progress", namespace=ns))
            wait("deployment Healthy", lambda: (get_json(kube, "mdep", "bot", namespace=ns).get("status") or {})
                 .get("phase") == "Healthy", timeout=120)
            assert get_json(kube, "hpa", "bot", namespace=ns) is not None
        finally:
            proc.terminate()
            proc.wait(30)
    output = (tmp_path / "operator.log").read_text(errors="replace")
    assert "403" not in output and "Forbidden" not in output, output[-3000:]
