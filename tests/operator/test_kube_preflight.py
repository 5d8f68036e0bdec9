"""Preflight on the real kube-apiserver with the operator in-process: a FineTuneJob whose estimated memory
exceeds the requested GPU fails with PreflightFailed and no training Job is ever created; a passing one gets
status.plan and its Job."""

from __future__ import annotations

import time

import pytest

from tests.operator.conftest import ftj_status, get_json, wait
from tests.operator.factories import finetunejob_json

pytestmark = pytest.mark.kube


def test_over_memory_job_fails_preflight_and_creates_no_job(ns, operator):
    kube = operator
    # 8B in bf16 is 15 GiB of weights alone: more than a T4 (14.5 GiB usable) holds.
    too_big = finetunejob_json("big", ns, baseModel={"family": "llama3", "source": {"hf": "meta-llama/Meta-Llama-3-8B-Instruct"}},
                   resources={"gpu": {"count": 1, "product": "Tesla-T4"}})
    kube.apply(finetunejob_json("ok", ns), namespace=ns)
    kube.apply(too_big, namespace=ns)
    st = wait("big Failed", lambda: (s := ftj_status(kube, ns, "big")).get("phase") == "Failed" and s)
    assert st["message"].startswith("PreflightFailed: memory: estimated")
    assert "14.5 GiB usable on resources.gpu.product Tesla-T4" in st["message"]
    assert "fits: 1 x L40S-48G with single" in st["message"]
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreflightFailed"
    plan = st["plan"]  # kept by the apiserver: status.plan is in the CRD schema
    assert plan["ok"] is False and plan["model"] == "Llama-3-8B"
    assert next(m for m in plan["memory"] if m["selected"])["totalGib"] > 14.5
    events = kube.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=big",
                          "-o", "json").stdout
    assert "PreflightFailed" in events

    # The passing job got its plan and its Job; the failing one never gets a Job, even after more reconciles.
    wait("Job ok-r1", lambda: get_json(kube, "job", "ok-r1", namespace=ns))
    assert ftj_status(kube, ns, "ok")["plan"]["ok"] is True
    time.sleep(2)
    jobs = get_json(kube, "jobs", "-l", "tuneops.io/finetunejob=big", namespace=ns)["items"]
    assert jobs == [] and get_json(kube, "job", "big-r1", namespace=ns) is None
