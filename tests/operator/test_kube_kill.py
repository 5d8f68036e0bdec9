"""Crash safety: SIGKILL the operator process mid-reconcile 20 times; the end state still converges.

The operator runs as a real `tuneops operator` subprocess. While it is being killed and restarted, jobs are
created, their pods finish (this test plays the kubelet, with the trainer's termination message), 26 jobs
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

INITIAL_JOBS = [f"k{i}" for i in range(1, 7)]
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


def _apply_job(kube, ns: str, name: str) -> None:
    doc = example("smollm2-lora.yaml")
    doc["metadata"] = {"name": name}
    doc["spec"]["output"]["registeredModel"] = "shared"  # all jobs race for shared-v1, v2, ...
    kube.apply(json.dumps(doc), namespace=ns)


def _start_operator(ns: str, log) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_TRAINING_POD_ANNOTATIONS": json.dumps(HOLD), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tuneops.cli", "operator", "--standalone", "-n", ns, "--metrics-port", "0",
         "--liveness", "", "--log-format", "plain"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_kill_operator_mid_reconcile_20_times(crds, tmp_path):
    kube = crds
    ns = kube.create_namespace("kill")  # not op-*: the in-process operator must not watch it
    JOBS = list(INITIAL_JOBS)
    for name in JOBS:
        _apply_job(kube, ns, name)
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
    busy_runs = 0
    with open(tmp_path / "final.log", "wb") as log:
        try:
            for i in range(KILLS):
                # One more job each round, so every incarnation has work in flight when it is killed.
                name = f"k{len(JOBS) + 1}"
                JOBS.append(name)
                _apply_job(kube, ns, name)
                run_log = tmp_path / f"run-{i}.log"
                with open(run_log, "wb") as out:
                    proc = _start_operator(ns, out)
                    # Imports take seconds on a busy machine, so time the kill from the operator's own log:
                    # a random moment after its first status write, while other reconciles are in flight.
                    try:
                        wait("a reconcile", lambda: ": status updated" in run_log.read_text(errors="replace"),
                             timeout=30, interval=0.05)
                    except AssertionError:
                        pass  # idle run: killed anyway, the assertion below counts it
                    time.sleep(rng.uniform(0.0, 0.6))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                # Reconciles log every status change they make.
                busy_runs += ": status updated" in run_log.read_text(errors="replace")
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
    active = md["status"]["activeSlot"]
    assert md["status"]["ready"] == "2/2"
    assert get_json(kube, "svc", "bot", namespace=ns)["spec"]["selector"]["tuneops.io/slot"] == active

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
    # One ModelVersion per job, numbers unique (26 racing jobs, killed operators).
    mvs = get_json(kube, "mv", "-l", "tuneops.io/job", namespace=ns)["items"]
    assert sorted(m["metadata"]["labels"]["tuneops.io/job"] for m in mvs) == sorted(JOBS)
    assert sorted(m["spec"]["version"] for m in mvs) == list(range(1, len(JOBS) + 1))
    for f in ftjs:
        mine = [m for m in mvs if m["metadata"]["labels"]["tuneops.io/job"] == f["metadata"]["name"]]
        assert f["status"]["modelVersion"] == mine[0]["metadata"]["name"]
    slots = get_json(kube, "deploy", "-l", "tuneops.io/modeldeployment=bot", namespace=ns)["items"]
    assert {d["metadata"]["name"] for d in slots} <= {"bot-blue", "bot-green"}
    for dep in slots:
        version = dep["metadata"]["annotations"]["tuneops.io/version"]
        if dep["metadata"]["name"] == f"bot-{active}":
            assert (version, dep["spec"]["replicas"]) == ("bot-v2", 2)
        else:  # scaleDownDelaySeconds 0: the old slot is at zero once the switch is done
            assert dep["spec"]["replicas"] == 0
    assert kubelet.finished >= len(JOBS)
    assert busy_runs >= KILLS * 3 // 4, f"only {busy_runs} of {KILLS} operator runs were reconciling when killed"
