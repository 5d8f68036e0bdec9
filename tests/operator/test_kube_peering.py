"""One active operator among replicas (kopf peering), and /metrics of a running operator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.operator.conftest import HOLD, REPO, get_json, wait
from tests.operator.factories import example
from tuneops.operator.runtime import peering_crds, peering_object

pytestmark = pytest.mark.kube


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _operator(ns: str, priority: int, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "TUNEOPS_TRAINING_POD_ANNOTATIONS": json.dumps(HOLD), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tuneops.cli", "operator", "-n", ns, "--peering", "tuneops",
                             "--priority", str(priority), "--metrics-port", str(port), "--liveness", "",
                             "--log-format", "json"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_only_the_highest_priority_replica_reconciles(crds, tmp_path):
    kube = crds
    for crd in peering_crds():
        kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    kube.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    ns = kube.create_namespace("peer")
    kube.apply(json.dumps(peering_object("tuneops", ns)), namespace=ns)
    ports = _free_port(), _free_port()
    logs = [open(tmp_path / f"op{i}.log", "wb") for i in range(2)]
    high, low = _operator(ns, 200, ports[0], logs[0]), _operator(ns, 100, ports[1], logs[1])
    try:
        wait("both peers registered", lambda: len((get_json(kube, "kopfpeering", "tuneops", namespace=ns)
                                                   .get("status") or {})) == 2, timeout=90)
        doc = example("smollm2-lora.yaml")
        doc["metadata"] = {"name": "peered"}
        kube.apply(json.dumps(doc), namespace=ns)
        wait("Job created", lambda: get_json(kube, "job", "peered-r1", namespace=ns), timeout=90)
        wait("status", lambda: (get_json(kube, "ftj", "peered", namespace=ns).get("status") or {}).get("phase"))

        def reconciles(port: int) -> float:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                       if line.startswith('tuneops_operator_reconciles_total{kind="FineTuneJob"'))

        assert wait("reconciles counted", lambda: reconciles(ports[0]) >= 1)
        assert reconciles(ports[1]) == 0  # paused: watched nothing, reconciled nothing
        line = next(line for line in (tmp_path / "op0.log").read_text().splitlines() if "status updated" in line)
        record = json.loads(line)  # structured logs: one JSON object per line
        assert record["message"].startswith("FineTuneJob") and record["phase"] and record["object"].endswith("/peered")
    finally:
        for proc in (high, low):
            proc.terminate()
        for proc in (high, low):
            proc.wait(30)
        for log in logs:
            log.close()
