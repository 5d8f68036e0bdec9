"""ModelDeployment blue/green on the real control plane: kwok runs the slot pods and makes them Ready.

Each step asserts the Service selectors; a watcher thread checks the safety invariant the whole time:
the active Service never selects a slot without Ready pods of an allowed version.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.operator.conftest import get_json, wait

pytestmark = pytest.mark.kube


def _mv(name: str, version: int, verdict: str) -> dict:
    return {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
            "spec": {"model": "bot", "version": version,
                     "baseModel": {"family": "llama3", "source": {"hf": "meta-llama/Meta-Llama-3-8B-Instruct"}},
                     "adapter": {"uri": f"s3://models/bot/{version}/adapter"},
                     "evaluation": {"verdict": verdict, "checks": [
                         {"metric": "rougeL", "passed": verdict == "Passed", "reason": "rougeL 0.21 < min 0.3"}]}}}


def _selectors(kube, ns) -> tuple[str, str]:
    active = get_json(kube, "svc", "bot", namespace=ns)["spec"]["selector"]["tuneops.io/slot"]
    preview = get_json(kube, "svc", "bot-preview", namespace=ns)["spec"]["selector"]["tuneops.io/slot"]
    return active, preview


def _status(kube, ns):
    return (get_json(kube, "mdep", "bot", namespace=ns) or {}).get("status") or {}


def _patch(kube, ns, spec: dict):
    kube.kubectl("patch", "mdep", "bot", "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


class Invariant(threading.Thread):
    """Polls the active Service and its slot: traffic only ever goes to Ready pods of a non-rejected version."""

    def __init__(self, kube, ns):
        super().__init__(daemon=True)
        self.kube, self.ns = kube, ns
        self.stop = threading.Event()
        self.violations: list[str] = []
        self.checks = 0

    def run(self):
        while not self.stop.is_set():
            svc = get_json(self.kube, "svc", "bot", namespace=self.ns)
            slot = svc and svc["spec"]["selector"]["tuneops.io/slot"]
            if slot and slot != "none":
                dep = get_json(self.kube, "deploy", f"bot-{slot}", namespace=self.ns)
                version = dep["metadata"]["annotations"]["tuneops.io/version"]
                if version == "bot-bad":
                    self.violations.append(f"active Service selects {slot} running rejected {version}")
                if not dep["status"].get("readyReplicas"):
                    self.violations.append(f"active Service selects {slot} with no Ready pods")
            self.checks += 1
            time.sleep(0.2)


def test_create_promote_rollback_reject_preview(ns, operator):
    kube = operator
    for name, version, verdict in (("bot-v1", 1, "Passed"), ("bot-v2", 2, "Passed"), ("bot-bad", 3, "Failed")):
        kube.apply(json.dumps(_mv(name, version, verdict)), namespace=ns)
    wait("versions reconciled", lambda: get_json(kube, "mv", "bot-bad", namespace=ns).get("status", {}).get("phase")
         == "Rejected")
    md = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "bot"},
          "spec": {"model": "bot", "activeVersion": "bot-v1", "engine": {"kind": "tgi", "port": 8080},
                   "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                   "promotion": {"scaleDownDelaySeconds": 600}}}
    kube.apply(json.dumps(md), namespace=ns)
    watcher = Invariant(kube, ns)
    watcher.start()
    try:
        # Create: v1 in blue, traffic switches once its pods are Ready.
        wait("v1 Healthy", lambda: _status(kube, ns).get("phase") == "Healthy", timeout=90)
        st = _status(kube, ns)
        assert (st["activeSlot"], st["activeVersion"], st["ready"]) == ("blue", "bot-v1", "2/2")
        assert _selectors(kube, ns) == ("blue", "green")
        hpa = get_json(kube, "hpa", "bot", namespace=ns)
        assert hpa["spec"]["scaleTargetRef"]["name"] == "bot-blue"
        assert get_json(kube, "pdb", "bot", namespace=ns)["spec"]["selector"]["matchLabels"]["tuneops.io/slot"] == "blue"
        row = kube.kubectl("get", "mdep", "bot", "-n", ns, "--no-headers").stdout.split()
        assert row[:2] == ["bot", "bot-v1"] and "Healthy" in row and "2/2" in row

        # Promote by editing activeVersion (the GitOps commit).
        _patch(kube, ns, {"activeVersion": "bot-v2"})
        wait("v2 active", lambda: _status(kube, ns).get("activeVersion") == "bot-v2", timeout=90)
        assert _selectors(kube, ns) == ("green", "blue")
        assert get_json(kube, "hpa", "bot", namespace=ns)["spec"]["scaleTargetRef"]["name"] == "bot-green"
        blue = get_json(kube, "deploy", "bot-blue", namespace=ns)
        assert blue["spec"]["replicas"] == 2  # kept warm for scaleDownDelaySeconds
        wait("Healthy on green", lambda: _status(kube, ns).get("phase") == "Healthy")

        # Rollback: the old slot is warm, so switching back is instant.
        start = time.monotonic()
        _patch(kube, ns, {"activeVersion": "bot-v1"})
        wait("rolled back", lambda: _selectors(kube, ns)[0] == "blue", timeout=30)
        rollback_seconds = time.monotonic() - start
        assert _status(kube, ns)["activeVersion"] == "bot-v1"
        assert rollback_seconds < 10, rollback_seconds

        # A rejected version is refused; traffic stays on v1.
        _patch(kube, ns, {"activeVersion": "bot-bad"})
        st = wait("Aborted", lambda: (s := _status(kube, ns)).get("phase") == "Aborted" and s)
        assert "rejected" in st["message"] and "traffic stays on bot-v1" in st["message"]
        assert _selectors(kube, ns)[0] == "blue"
        versions = {d["metadata"]["annotations"]["tuneops.io/version"]
                    for d in get_json(kube, "deploy", "-l", "tuneops.io/modeldeployment=bot", namespace=ns)["items"]}
        assert "bot-bad" not in versions
        events = get_json(kube, "events", "--field-selector", "involvedObject.name=bot", namespace=ns)["items"]
        assert "VersionRejected" in {e["reason"] for e in events}

        # Preview: v2 in the idle slot behind bot-preview; the active Service stays on v1.
        _patch(kube, ns, {"activeVersion": "bot-v1", "previewVersion": "bot-v2"})
        st = wait("preview running", lambda: (s := _status(kube, ns)).get("previewVersion") == "bot-v2"
                  and s.get("phase") == "Healthy" and s)
        assert _selectors(kube, ns) == ("blue", "green")
        green = wait("green runs v2 x1", lambda: (d := get_json(kube, "deploy", "bot-green", namespace=ns))
                     ["metadata"]["annotations"]["tuneops.io/version"] == "bot-v2" and d["spec"]["replicas"] == 1 and d)
        assert green["spec"]["template"]["metadata"]["labels"]["tuneops.io/slot"] == "green"
        mv = wait("deployedBy", lambda: (m := get_json(kube, "mv", "bot-v1", namespace=ns))
                  .get("status", {}).get("deployedBy") == ["bot"] and m)
        assert mv["status"]["phase"] == "Ready"
    finally:
        watcher.stop.set()
        watcher.join(5)
    assert watcher.checks > 10 and watcher.violations == []
    children = get_json(kube, "deploy,svc,hpa,pdb", "-l", "tuneops.io/modeldeployment=bot", namespace=ns)["items"]
    assert sorted((c["kind"], c["metadata"]["name"]) for c in children) == [
        ("Deployment", "bot-blue"), ("Deployment", "bot-green"), ("HorizontalPodAutoscaler", "bot"),
        ("PodDisruptionBudget", "bot"), ("Service", "bot"), ("Service", "bot-preview")]
