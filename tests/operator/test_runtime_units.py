"""Work queue, metrics, RBAC rendering and the kube REST helpers' pure parts (no cluster)."""

from __future__ import annotations

import threading
import time
import urllib.request

import yaml

from tuneops.cli import main
from tuneops.operator import metrics
from tuneops.operator.kube import RESOURCES, Kube, _contains
from tuneops.operator.rbac import RULES, cluster_role
from tuneops.operator.workqueue import WorkQueue


def test_queue_collapses_bursts_and_never_runs_a_key_twice_at_once():
    running: dict[str, int] = {}
    overlaps: list[str] = []
    calls: list[str] = []
    gate = threading.Event()

    def handler(key):
        running[key] = running.get(key, 0) + 1
        if running[key] > 1:
            overlaps.append(key)
        calls.append(key)
        gate.wait(1)
        running[key] -= 1
        return None

    q = WorkQueue(handler, workers=4).start()
    try:
        for _ in range(50):
            q.add("a")
        time.sleep(0.1)
        for _ in range(50):
            q.add("a")  # while "a" runs: remembered once, run once more afterwards
        q.add("b")
        gate.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (calls.count("a") < 2 or "b" not in calls):
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        q.stop()
    assert overlaps == []
    assert calls.count("a") == 2 and calls.count("b") == 1


def test_queue_requeues_after_delay_and_backs_off_on_errors():
    calls: list[float] = []
    t0 = time.monotonic()

    def handler(key):
        calls.append(time.monotonic() - t0)
        if len(calls) == 1:
            return 0.3  # "look again in 0.3 s"
        if len(calls) == 2:
            raise RuntimeError("transient")
        return None

    q = WorkQueue(handler, workers=1, error_backoff=(0.2, 1.0)).start()
    try:
        q.add("k")
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        q.stop()
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.29 and calls[2] - calls[1] >= 0.19


def test_metrics_count_reconciles_errors_and_latency(tmp_path):
    before_ok = metrics.RECONCILES.labels("Test", "ok")._value.get()
    with metrics.observe("Test"):
        time.sleep(0.01)
    try:
        with metrics.observe("Test"):
            raise KeyError("x")
    except KeyError:
        pass
    assert metrics.RECONCILES.labels("Test", "ok")._value.get() == before_ok + 1
    assert metrics.ERRORS.labels("Test", "KeyError")._value.get() >= 1
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(port, depth=lambda: 7)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'tuneops_operator_reconciles_total{kind="Test",result="ok"}' in body
    assert 'tuneops_operator_reconcile_errors_total{error="KeyError",kind="Test"}' in body
    assert 'tuneops_operator_reconcile_duration_seconds_bucket{kind="Test"' in body
    assert "tuneops_operator_queue_depth 7.0" in body


def test_rbac_covers_every_resource_the_operator_touches_and_no_secrets(capsys):
    role = cluster_role()
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for kind, res in RESOURCES.items():
        assert (res.group, res.plural) in granted, kind
    assert not any("secrets" in r.resources for r in RULES)
    assert not any("*" in r.verbs or "*" in r.resources for r in RULES)
    assert main(["operator", "rbac", "--service-account", "tuneops-system/tuneops", "--peering-crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                                         "CustomResourceDefinition"]
    assert docs[1]["subjects"] == [{"kind": "ServiceAccount", "name": "tuneops", "namespace": "tuneops-system"}]


def test_paths_and_contains():
    assert Kube.path("Job", "ml", "x") == "/apis/batch/v1/namespaces/ml/jobs/x"
    assert Kube.path("ConfigMap", "ml") == "/api/v1/namespaces/ml/configmaps"
    assert Kube.path("FineTuneJob", "ml", "a", "status") == "/apis/tuneops.io/v1alpha1/namespaces/ml/finetunejobs/a/status"
    current = {"spec": {"replicas": 2, "selector": {"a": "b"}, "extra": 1}, "metadata": {"labels": {"x": "1"}}}
    assert _contains(current, {"spec": {"replicas": 2, "selector": {"a": "b"}}})
    assert not _contains(current, {"spec": {"replicas": 3}})
    assert not _contains(current, {"spec": {"selector": {"a": "c"}}})


def test_delayed_adds_of_one_key_collapse():
    calls: list[str] = []
    q = WorkQueue(lambda key: calls.append(key), workers=2).start()
    try:
        for _ in range(20):
            q.add("burst", delay=0.2)  # a pod's created/scheduled/running events
        time.sleep(0.8)
    finally:
        q.stop()
    assert calls == ["burst"]


def test_parent_event_filter_skips_our_own_status_writes():
    from tuneops.operator.handlers import needs_reconcile

    body = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}
    assert needs_reconcile(None, body) and needs_reconcile("ADDED", body)  # listing at start-up, creation
    assert not needs_reconcile("MODIFIED", body)  # a status write of ours
    assert needs_reconcile("MODIFIED", {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}})
    assert needs_reconcile("MODIFIED", {"metadata": {"generation": 1}})  # never reconciled yet
    assert not needs_reconcile("DELETED", body)
