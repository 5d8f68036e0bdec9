"""Attempts on the real control plane: preemption, node loss and a spec change, each resuming from the checkpoint
the trainer published before it (progress ConfigMap), with the real Job controller making the replacement pods.

The test plays the kubelet and the control-plane components that disrupt pods: preemption = the scheduler's
DisruptionTarget condition (PreemptionByScheduler) and a Failed phase; node loss = the taint manager's
DisruptionTarget (DeletionByTaintManager) and a Failed phase (pod GC), then the pod's deletion.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.operator.conftest import get_json, wait
from tests.operator.factories import example

pytestmark = pytest.mark.kube


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _status(kube, ns):
    return (get_json(kube, "ftj", "att", namespace=ns) or {}).get("status") or {}


def _running(kube, ns, job, exclude=()):
    pods = get_json(kube, "pods", "-l", f"job-name={job}", namespace=ns)["items"]
    return next((p for p in pods if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in exclude
                 and not p["metadata"].get("deletionTimestamp")), None)


def _publish(kube, ns, step: int, checkpoint: str):
    progress = {"phase": "Running", "step": step, "totalSteps": 100, "lastCheckpoint": checkpoint, "updated": _now()}
    kube.kubectl("patch", "configmap", "att-progress", "-n", ns, "--type=merge",
                 "-p", json.dumps({"data": {"progress": json.dumps(progress)}}))
    wait(f"{checkpoint} recorded", lambda: _status(kube, ns).get("lastCheckpoint") == checkpoint)


def _disrupt(kube, ns, pod: str, reason: str, failed: bool):
    now = _now()
    status: dict = {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason,
                                    "message": "test", "lastTransitionTime": now}]}
    if failed:
        status["phase"] = "Failed"
        status["containerStatuses"] = [{"name": "trainer", "image": "tuneops-train:test", "ready": False,
                                        "restartCount": 0, "started": False, "state": {"terminated": {
                                            "exitCode": 143, "reason": "Error", "startedAt": now,
                                            "finishedAt": now}}}]
    kube.kubectl("patch", "pod", pod, "-n", ns, "--subresource=status", "--type=strategic",
                 "-p", json.dumps({"status": status}))


def _attempts(kube, ns, n):
    return wait(f"{n} attempts", lambda: len(a := _status(kube, ns).get("attempts") or []) == n and a)


def test_preemption_node_loss_and_spec_change_are_attempts(ns, operator):
    kube = operator
    doc = example("smollm2-lora.yaml")
    doc["metadata"] = {"name": "att", "namespace": ns}
    kube.apply(json.dumps(doc), namespace=ns)
    pod1 = wait("pod 1 Running", lambda: _running(kube, ns, "att-r1"))["metadata"]["name"]
    _publish(kube, ns, 10, "s3://ckpt/att/checkpoint-10")

    # 1. Preempted: the Job controller replaces it without counting a failure (podFailurePolicy Ignore).
    _disrupt(kube, ns, pod1, "PreemptionByScheduler", failed=True)
    pod2 = wait("pod 2 Running", lambda: _running(kube, ns, "att-r1", exclude=[pod1]))["metadata"]["name"]
    attempts = _attempts(kube, ns, 2)
    assert attempts[0]["reason"] == "Preempted" and attempts[0]["pod"] == pod1
    assert attempts[1]["resumedFrom"] == "s3://ckpt/att/checkpoint-10" and attempts[1]["pod"] == pod2
    _publish(kube, ns, 20, "s3://ckpt/att/checkpoint-20")

    # 2. Node lost: the taint manager marks the pod (DisruptionTarget) and deletes it; with the kubelet gone, pod GC
    # sets the phase Failed before the pod object goes. kwok removes a deleted pod at once, where a lost node's pod
    # lingers while terminating: the test waits for the operator to see it first, as it would then.
    _disrupt(kube, ns, pod2, "DeletionByTaintManager", failed=True)
    wait("attempt 2 ended", lambda: (_status(kube, ns).get("attempts") or [{}, {}])[1].get("reason") == "NodeLost")
    kube.kubectl("delete", "pod", pod2, "-n", ns, "--wait=false")
    pod3 = wait("pod 3 Running", lambda: _running(kube, ns, "att-r1", exclude=[pod1, pod2]), timeout=90)
    attempts = _attempts(kube, ns, 3)
    assert attempts[2]["resumedFrom"] == "s3://ckpt/att/checkpoint-20" and attempts[2]["pod"] == pod3["metadata"]["name"]
    _publish(kube, ns, 30, "s3://ckpt/att/checkpoint-30")

    # 3. The user changes the spec: revision 2 replaces the running attempt and resumes from checkpoint-30.
    kube.kubectl("patch", "ftj", "att", "-n", ns, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"learningRate": 0.0001}}}))
    wait("pod of revision 2 Running", lambda: _running(kube, ns, "att-r2"))
    attempts = _attempts(kube, ns, 4)
    assert [a.get("reason") for a in attempts] == ["Preempted", "NodeLost", "SpecChanged", None]
    assert [a.get("resumedFrom") for a in attempts] == [
        None, "s3://ckpt/att/checkpoint-10", "s3://ckpt/att/checkpoint-20", "s3://ckpt/att/checkpoint-30"]
    assert [a["job"] for a in attempts] == ["att-r1", "att-r1", "att-r1", "att-r2"]
    assert all(a["start"] <= a["end"] for a in attempts[:3])
    st = _status(kube, ns)
    assert st["attemptCount"] == 4 and st["lastCheckpoint"] == "s3://ckpt/att/checkpoint-30"

    # Level-based: more reconciles (progress updates, a status-only change) never duplicate an attempt.
    _publish(kube, ns, 40, "s3://ckpt/att/checkpoint-40")
    time.sleep(2)
    st = _status(kube, ns)
    assert st["attempts"] == attempts and st["attemptCount"] == 4
    header, row = kube.kubectl("get", "ftj", "att", "-n", ns).stdout.splitlines()[:2]
    assert row[header.index("ATTEMPTS"):].split()[0] == "4"  # columns are aligned; PROGRESS has a space
    events = get_json(kube, "events", "--field-selector", "involvedObject.name=att", namespace=ns)["items"]
    assert sorted(e["message"].split(",")[0] for e in events if e["reason"] == "Restarted") == [
        "attempt 2 started", "attempt 3 started", "attempt 4 started"]
