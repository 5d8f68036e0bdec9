"""Crash safety: SIGKILL the operator process mid-reconcile 20 times; the end state still converges.

The operator runs as a real `tuneops operator` subprocess. While it is being killed and restarted, jobs are
created, their pods finish (this test plays the kubelet, with the trainer's termination message), six jobs
race for version numbers of the same registered model, a job's spec is edited and a ModelDeployment is
promoted. At the end: no duplicate children, one ModelVersion per job with unique numbers, every status
observed the latest generation, and nothing is stuck in a non-final phase.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from tests.operator.conftest import HOLD, REPO, get_json, wait
from tests.operator.factories import example

pytestmark = pytest.mark.kube

JOBS = [f"k{i}" for i in range(1, 7)]
KILLS = 20


def _result(name: str) -> str:
    return json.dumps({"phase": "Succeeded", "adapterUri": f"s3://m/{name}/adapter", "metrics": {"loss": 1.0},
                       "evaluation": {"verdict": "Passed"}})


class Kubelet(threading.Thread):
    """Finishes every Running training pod a moment after it starts, as a real pod would on success."""

    def __init__(self, kube, ns):
        super().__init__(daemon=True)
        self.kube, self.ns, self.stop = kube, ns, threading.Event()
        self.finished = 0

    def run(self):
        while not self.stop.wait(0.5):
            pods = get_json(self.kube, "pods", "-l", "tuneops.io/finetunejob", namespace=self.ns) or {"items": []}
            for pod in pods["items"]:
                if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
                    parent = pod["metadata"]["annotations"]["tuneops.io/finetunejob"]
                    self.kube.finish_pod(pod["metadata"]["name"], self.ns, "Succeeded", message=_result(parent))
                    self.finished += 1


def _start_operator(ns: str, log) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_TRAINING_POD_ANNOTATIONS": json.dumps(HOLD), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tuneops.cli", "operator", "--standalone", "-n", ns, "--metrics-port", "0",
         "--liveness", "", "--log-format", "plain"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_kill_operator_mid_reconcile_20_times(crds, tmp_path):
    kube = crds
    ns = kube.create_namespace("kill")  # not op-*: the in-process operator must not watch it
    for name in JOBS:
        doc = example("smollm2-lora.yaml")
        doc["metadata"] = {"name": name}
        doc["spec"]["output"]["registeredModel"] = "shared"  # all six race for shared-v1..v6
        kube.apply(json.dumps(doc), namespace=ns)
    for n in (1, 2):
        kube.apply(json.dumps({"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion",
                               "metadata": {"name": f"bot-v{n}"},
                               "spec": {"model": "bot", "version": n,
                                        "baseModel": {"family": "llama3", "source": {"hf": "org/base"}},
                                        "adapter": {"uri": f"s3://m/bot/{n}"},
                                        "evaluation": {"verdict": "Passed"}}}), namespace=ns)
    kube.apply(json.dumps({"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelDeployment",
                           "metadata": {"name": "bot"},
                           "spec": {"model": "bot", "activeVersion": "bot-v1", "replicas": 2,
                                    "promotion": {"scaleDownDelaySeconds": 0}}}), namespace=ns)
    kubelet = Kubelet(kube, ns)
    kubelet.start()
    rng = random.Random(8)
    log_path = tmp_path / "operator.log"
    with open(log_path, "wb") as log:
        try:
            for i in range(KILLS):
                proc = _start_operator(ns, log)
                time.sleep(rng.uniform(1.5, 4.0))  # start-up takes ~1 s; then it is reconciling
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                if i == 5:
                    kube.kubectl("patch", "mdep", "bot", "-n", ns, "--type=merge", "-p",
                                 json.dumps({"spec": {"activeVersion": "bot-v2"}}))
                if i == 2:
                    kube.kubectl("patch", "ftj", "k1", "-n", ns, "--type=merge", "-p",
                                 json.dumps({"spec": {"training": {"learningRate": 0.0001}}}))
            final = _start_operator(ns, log)
            try:
                def converged():
                    ftjs = get_json(kube, "ftj", namespace=ns)["items"]
                    md = get_json(kube, "mdep", "bot", namespace=ns)
                    return (all((f.get("status") or {}).get("phase") == "Succeeded" for f in ftjs)
                            and (md.get("status") or {}).get("activeVersion") == "bot-v2"
                            and md["status"].get("phase") == "Healthy" and (ftjs, md))
                ftjs, md = wait("convergence", converged, timeout=180, interval=1)
            finally:
                final.terminate()
                final.wait(30)
        finally:
            kubelet.stop.set()
            kubelet.join(10)

    # No stuck status: every object observed its latest generation.
    for f in ftjs:
        st = f["status"]
        assert st["observedGeneration"] == f["metadata"]["generation"], f["metadata"]["name"]
        assert all(c["observedGeneration"] == f["metadata"]["generation"] for c in st["conditions"])
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert (md["status"]["activeSlot"], md["status"]["ready"]) == ("green", "2/2")

    # No duplicate children: one Job per revision, one of each per-job child.
    jobs = get_json(kube, "jobs", namespace=ns)["items"]
    per_ftj = Counter(j["metadata"]["labels"]["tuneops.io/finetunejob"] for j in jobs)
    revisions = {f["metadata"]["name"]: int(f["status"]["trainingJob"].rsplit("-r", 1)[1]) for f in ftjs}
    for name in JOBS:
        assert per_ftj[name] <= revisions[name], (name, per_ftj[name])
        assert get_json(kube, "job", f"{name}-r{revisions[name]}", namespace=ns) is not None
    for kind in ("serviceaccounts", "roles", "rolebindings"):
        owners = Counter(o["metadata"]["labels"]["tuneops.io/finetunejob"] for o in get_json(
            kube, kind, "-l", "tuneops.io/finetunejob", namespace=ns)["items"])
        assert owners == Counter({name: 1 for name in JOBS}), kind
    # One ModelVersion per job, numbers unique (six racing jobs, killed operators).
    mvs = get_json(kube, "mv", "-l", "tuneops.io/job", namespace=ns)["items"]
    assert sorted(m["metadata"]["labels"]["tuneops.io/job"] for m in mvs) == sorted(JOBS)
    assert sorted(m["spec"]["version"] for m in mvs) == [1, 2, 3, 4, 5, 6]
    for f in ftjs:
        mine = [m for m in mvs if m["metadata"]["labels"]["tuneops.io/job"] == f["metadata"]["name"]]
        assert f["status"]["modelVersion"] == mine[0]["metadata"]["name"]
    slots = get_json(kube, "deploy", "-l", "tuneops.io/modeldeployment=bot", namespace=ns)["items"]
    assert sorted(d["metadata"]["name"] for d in slots) == ["bot-blue", "bot-green"]
    blue = next(d for d in slots if d["metadata"]["name"] == "bot-blue")
    assert blue["spec"]["replicas"] == 0  # scaleDownDelaySeconds 0: the old slot is gone after the switch
    assert kubelet.finished >= len(JOBS)
