"""FineTuneJob on the real kube-apiserver + kube-controller-manager, with the operator running in-process.

Pods are driven as the kubelet would: kwok schedules and starts them (they are annotated `hold`), then the test
patches the pod status to Succeeded/Failed with the trainer's JSON termination message (`kube.finish_pod`);
the real Job controller then completes or fails the Job. The progress ConfigMap is patched as the trainer does.
"""

from __future__ import annotations

import json

import pytest

from tests.operator.conftest import ftj_status, get_json, wait
from tests.operator.factories import finetunejob_json

pytestmark = pytest.mark.kube

RESULT = {"phase": "Succeeded", "adapterUri": "s3://models/ml/sft/adapter", "mergedUri": "s3://models/ml/sft/merged",
          "metrics": {"loss": 0.91, "evalLoss": 1.02}, "mlflowRunId": "0123abcd",
          "datasetHash": "sha256:" + "b" * 64,
          "evaluation": {"verdict": "Passed", "base": {"loss": 1.4}, "tuned": {"loss": 0.91},
                         "checks": [{"metric": "loss", "base": 1.4, "tuned": 0.91, "passed": True}],
                         "primaryMetric": "loss", "score": 0.91}}


def _running_pod(kube, ns, job):
    pods = get_json(kube, "pods", "-l", f"job-name={job}", namespace=ns)["items"]
    return next((p for p in pods if p["status"].get("phase") == "Running"), None)


def test_job_created_with_expected_spec_then_succeeds(ns, operator):
    kube = operator
    kube.apply(finetunejob_json("sft", ns), namespace=ns)
    job = wait("Job sft-r1", lambda: get_json(kube, "job", "sft-r1", namespace=ns))
    ftj = get_json(kube, "ftj", "sft", namespace=ns)
    assert job["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tuneops-operator"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "sft-trainer"
    (c,) = pod_spec["containers"]
    assert c["command"] == ["python", "-m", "tuneops.runtime.train", "--spec", "/etc/tuneops/job.yaml",
                            "--output", "/output/sft"]
    assert {"name": "TUNEOPS_PROGRESS_CONFIGMAP", "value": "sft-progress"} in c["env"]
    cm = get_json(kube, "configmap", "sft-r1-spec", namespace=ns)
    assert "family: smollm2" in cm["data"]["job.yaml"]
    role = get_json(kube, "role", "sft-progress", namespace=ns)
    assert role["rules"][0]["resourceNames"] == ["sft-progress"]
    # The trainer's ServiceAccount may patch exactly its progress ConfigMap, nothing else.
    sa = f"system:serviceaccount:{ns}:sft-trainer"
    assert kube.kubectl("auth", "can-i", "patch", "configmap/sft-progress", "-n", ns, "--as", sa).stdout.strip() == "yes"
    assert kube.kubectl("auth", "can-i", "patch", "configmap/sft-r1-spec", "-n", ns, "--as", sa,
                        check=False).stdout.strip() == "no"

    pod = wait("training pod Running", lambda: _running_pod(kube, ns, "sft-r1"))
    wait("phase Running", lambda: ftj_status(kube, ns, "sft").get("phase") == "Running")
    progress = {"phase": "Running", "step": 4, "totalSteps": 10, "epoch": 0.4,
                "metrics": {"loss": 1.25, "learningRate": 0.0002}, "mlflowRunId": "0123abcd",
                "lastCheckpoint": "/output/sft/checkpoints/checkpoint-4", "updated": "2026-11-25T09:00:00Z"}
    kube.kubectl("patch", "configmap", "sft-progress", "-n", ns, "--type=merge",
                 "-p", json.dumps({"data": {"progress": json.dumps(progress)}}))
    wait("progress copied", lambda: (ftj_status(kube, ns, "sft").get("progress") or {}).get("summary") == "40% (4/10)")
    row = kube.kubectl("get", "ftj", "sft", "-n", ns, "--no-headers").stdout.split()
    assert row[:6] == ["sft", "Running", "smollm2", "lora", "40%", "(4/10)"] and row[6] == "1.25"
    st = ftj_status(kube, ns, "sft")
    assert st["mlflow"]["runId"] == "0123abcd" and st["lastCheckpoint"].endswith("checkpoint-4")
    assert st["attempts"][0]["n"] == 1

    kube.finish_pod(pod["metadata"]["name"], ns, phase="Succeeded", message=json.dumps(RESULT))
    st = wait("Succeeded", lambda: (s := ftj_status(kube, ns, "sft")).get("phase") == "Succeeded" and s)
    assert st["modelVersion"] == "support-triage-v1"
    assert st["metrics"]["loss"] == 0.91 and st["datasetHash"] == RESULT["datasetHash"]
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["observedGeneration"] == ftj["metadata"]["generation"]
    mv = get_json(kube, "mv", "support-triage-v1", namespace=ns)
    assert "ownerReferences" not in mv["metadata"]  # standalone: deleting the job keeps the version
    assert mv["metadata"]["labels"]["tuneops.io/job"] == "sft"
    assert mv["spec"]["adapter"]["uri"] == RESULT["adapterUri"] and mv["spec"]["lineage"]["mlflowRunId"] == "0123abcd"
    mv = wait("ModelVersion Ready", lambda: (m := get_json(kube, "mv", "support-triage-v1", namespace=ns))
               .get("status", {}).get("phase") == "Ready" and m)
    assert mv["status"]["evaluation"]["verdict"] == "Passed"
    events = get_json(kube, "events", "--field-selector", "involvedObject.name=sft", namespace=ns)["items"]
    assert {"Running", "Succeeded", "ModelVersionCreated"} <= {e["reason"] for e in events}

    kube.kubectl("delete", "ftj", "sft", "-n", ns, "--wait=true", timeout=60)
    wait("children garbage-collected", lambda: get_json(kube, "job", "sft-r1", namespace=ns) is None, timeout=60)
    assert get_json(kube, "mv", "support-triage-v1", namespace=ns) is not None


def test_failure_reports_the_trainers_reason(ns, operator):
    kube = operator
    kube.apply(finetunejob_json("bad", ns, backoffLimit=0), namespace=ns)
    pod = wait("training pod Running", lambda: _running_pod(kube, ns, "bad-r1"))
    result = {"phase": "Failed", "reason": "TooManyRejectedRows", "message": "12.0% of rows rejected > 5.0%"}
    kube.finish_pod(pod["metadata"]["name"], ns, phase="Failed", exit_code=2, message=json.dumps(result))
    st = wait("Failed", lambda: (s := ftj_status(kube, ns, "bad")).get("phase") == "Failed" and s)
    assert st["message"] == "TooManyRejectedRows: 12.0% of rows rejected > 5.0%"
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TooManyRejectedRows"
    assert st["attempts"][0]["reason"].startswith("Error")
    assert get_json(kube, "mv", "-l", "tuneops.io/job=bad", namespace=ns)["items"] == []


def test_spec_edit_restarts_as_a_new_revision(ns, operator):
    kube = operator
    kube.apply(finetunejob_json("edit", ns), namespace=ns)
    wait("training pod Running", lambda: _running_pod(kube, ns, "edit-r1"))
    kube.kubectl("patch", "ftj", "edit", "-n", ns, "--type=merge", "-p",
                 json.dumps({"spec": {"training": {"learningRate": 0.0001}}}))
    wait("Job edit-r2", lambda: get_json(kube, "job", "edit-r2", namespace=ns))
    wait("edit-r1 deleted", lambda: get_json(kube, "job", "edit-r1", namespace=ns) is None
         or get_json(kube, "job", "edit-r1", namespace=ns)["metadata"].get("deletionTimestamp"))
    cm = get_json(kube, "configmap", "edit-r2-spec", namespace=ns)
    assert "learningRate: 0.0001" in cm["data"]["job.yaml"]
    st = wait("attempt 1 ended SpecChanged",
              lambda: (s := ftj_status(kube, ns, "edit")).get("attempts") and s["attempts"][0].get("reason") == "SpecChanged" and s)
    assert st["trainingJob"] == "edit-r2"
    ftj = get_json(kube, "ftj", "edit", namespace=ns)
    assert st["observedGeneration"] == ftj["metadata"]["generation"] == 2
