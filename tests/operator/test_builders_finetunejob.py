"""FineTuneJob: children manifests and status transitions, table-driven, no cluster."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.operator.factories import NOW, example, finetunejob, job, modelversion, pod
from tuneops.api import FineTuneJobSpec
from tuneops.operator import ftj_children as kids
from tuneops.operator.ftj_plan import FtjObserved, plan_finetunejob
from tuneops.operator.meta import FTJ_LABEL, SPEC_HASH_ANNOTATION, child_name, spec_hash
from tuneops.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(training_image="train:1", mlflow_uri="http://mlflow:5000")


def _digest(ftj: dict) -> str:
    return spec_hash(FineTuneJobSpec.model_validate(ftj["spec"]).to_wire())


def _job_manifest(ftj: dict, revision: int = 1) -> dict:
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    return kids.training_job(ftj, spec, revision, _digest(ftj), SETTINGS)


# ---------------------------------------------------------------------------------------------------------
# Children


def test_children_names_labels_and_owner():
    ftj = finetunejob("sft")
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    objs = kids.children(ftj, spec, 1, _digest(ftj), SETTINGS)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ServiceAccount", "sft-trainer"), ("ConfigMap", "sft-progress"), ("Role", "sft-progress"),
        ("RoleBinding", "sft-progress"), ("ConfigMap", "sft-r1-spec"), ("Job", "sft-r1")]
    for obj in objs:
        assert obj["metadata"]["namespace"] == "ml"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tuneops-operator"
        assert labels["app.kubernetes.io/instance"] == "sft" and labels[FTJ_LABEL] == "sft"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "tuneops.io/v1alpha1", "kind": "FineTuneJob", "name": "sft",
                         "uid": "uid-sft", "controller": True, "blockOwnerDeletion": True}
    # Same input, same output: a retried reconcile never invents new names.
    assert objs == kids.children(ftj, spec, 1, _digest(ftj), SETTINGS)


def test_progress_role_grants_only_its_configmap():
    role = kids.progress_role(finetunejob("sft"))
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["sft-progress"],
                              "verbs": ["get", "patch"]}]
    binding = kids.progress_role_binding(finetunejob("sft"))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sft-trainer", "namespace": "ml"}]


def test_training_pods_run_as_the_service_account_the_spec_names():
    ftj = finetunejob("sft")
    ftj["spec"].setdefault("resources", {})["serviceAccountName"] = "bucket-reader"
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    objs = kids.children(ftj, spec, 1, _digest(ftj), SETTINGS)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert ("ServiceAccount", "sft-trainer") not in kinds  # the user's SA is theirs to create
    pod_spec = next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "bucket-reader"
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bucket-reader", "namespace": "ml"}]
    # Unset: the operator's own SA, bound the same way.
    ftj["spec"]["resources"].pop("serviceAccountName")
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    objs = kids.children(ftj, spec, 1, _digest(ftj), SETTINGS)
    assert next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["spec"]["serviceAccountName"] == \
        "sft-trainer"
    assert next(o for o in objs if o["kind"] == "RoleBinding")["subjects"][0]["name"] == "sft-trainer"


def test_spec_configmap_holds_the_validated_spec_with_defaults():
    ftj = finetunejob("sft")
    cm = kids.spec_configmap(ftj, FineTuneJobSpec.model_validate(ftj["spec"]), 2)
    doc = yaml.safe_load(cm["data"]["job.yaml"])
    assert doc["kind"] == "FineTuneJob" and doc["metadata"] == {"name": "sft", "namespace": "ml"}
    assert doc["spec"]["training"]["optimizer"] == "adamw_torch"  # defaults resolved
    assert cm["metadata"]["name"] == "sft-r2-spec"


def test_single_pod_job_spec():
    ftj = finetunejob("sft")
    j = _job_manifest(ftj)
    assert j["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == _digest(ftj)
    spec = j["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert "completionMode" not in spec
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never" and pod_spec["serviceAccountName"] == "sft-trainer"
    (c,) = pod_spec["containers"]
    assert c["image"] == "train:1"
    assert c["command"] == ["python", "-m", "tuneops.runtime.train", "--spec", "/etc/tuneops/job.yaml",
                            "--output", "/output/sft"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TUNEOPS_PROGRESS_CONFIGMAP"]["value"] == "sft-progress"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/etc/tuneops", "/dev/shm"} <= mounts
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod_spec["volumes"]


def test_multi_node_gpu_job_spec():
    ftj = finetunejob("big", example_file="llama3-qlora.yaml")
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    objs = kids.children(ftj, spec, 3, _digest(ftj), SETTINGS)
    svc = next(o for o in objs if o["kind"] == "Service")
    j = objs[-1]
    assert svc["metadata"]["name"] == j["metadata"]["name"] == "big-r3"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert j["spec"]["completionMode"] == "Indexed"
    assert j["spec"]["completions"] == j["spec"]["parallelism"] == 2
    pod_spec = j["spec"]["template"]["spec"]
    assert pod_spec["subdomain"] == "big-r3"
    assert pod_spec["nodeSelector"] == {"tuneops.io/pool": "gpu-spot", "nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert pod_spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (c,) = pod_spec["containers"]
    assert c["command"][:5] == ["torchrun", "--nnodes=2", "--nproc-per-node=1", "--node-rank=$(NODE_RANK)",
                                "--master-addr=$(MASTER_ADDR)"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MASTER_ADDR"]["value"] == "big-r3-0.big-r3"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    assert env["TUNEOPS_CHECKPOINT_URI"]["value"] == "s3://acme-ml/ckpt/ml/big/"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert c["resources"] == {"requests": {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"},
                              "limits": {"memory": "48Gi", "nvidia.com/gpu": "1"}}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod_spec["volumes"]
    # No inline secret anywhere in the pod.
    assert all("value" not in e or "TOKEN" not in e["name"] for e in c["env"])


def test_pvc_checkpoints_make_the_run_dir_survive_pods():
    ftj = finetunejob("sft")
    ftj["spec"]["storage"] = {"volumeClaim": "ckpt"}
    j = _job_manifest(ftj)
    c = j["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-1] == "/checkpoints/sft"
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}} in j["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize("parent, suffix", [("a" * 80, "r1"), ("b" * 63, "progress"), ("x", "r12")])
def test_child_names_fit_63_chars_and_are_stable(parent, suffix):
    name = child_name(parent, suffix)
    assert len(name) <= 63 and name.endswith(suffix) and name == child_name(parent, suffix)


# ---------------------------------------------------------------------------------------------------------
# Status transitions

RESULT_OK = {"phase": "Succeeded", "adapterUri": "s3://b/sft/adapter", "metrics": {"loss": 0.8},
             "mlflowRunId": "run-1", "datasetHash": "sha256:" + "a" * 64,
             "evaluation": {"verdict": "Passed", "tuned": {"loss": 0.8}}}


def _case(status=None, jobs=(), pods=(), progress=None, versions=(), spec_edit=None):
    ftj = finetunejob("sft", status=status, generation=2 if spec_edit else 1)
    if spec_edit:
        spec_edit(ftj["spec"])
    d = _digest(finetunejob("sft"))
    return ftj, d, FtjObserved(jobs=[j(ftj, d) if callable(j) else j for j in jobs],
                               pods=[p(ftj) for p in pods], progress=progress, versions=list(versions))


T1, T2 = "2026-11-25T08:01:00Z", "2026-11-25T08:10:00Z"

CASES = {
    "new job: children, Pending": dict(
        jobs=[], pods=[], expect_phase="Pending", expect_job="sft-r1", expect_attempts=0),
    "pod running, no progress yet": dict(
        jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)],
        expect_phase="Running", expect_attempts=1),
    "progress copied": dict(
        jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)],
        progress={"phase": "Running", "step": 1200, "totalSteps": 3000, "epoch": 0.4,
                  "metrics": {"loss": 1.12, "learningRate": 1e-4}, "mlflowRunId": "r9",
                  "lastCheckpoint": "s3://c/checkpoint-1200", "updated": "2026-11-25T08:21:00Z"},
        expect_phase="Running", expect_summary="40% (1200/3000)", expect_loss=1.12),
    "evaluating phase from progress": dict(
        jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)],
        progress={"phase": "Evaluating", "step": 10, "totalSteps": 10}, expect_phase="Evaluating"),
    "success creates ModelVersion": dict(
        jobs=[lambda f, d: job(f, 1, d, "Complete")],
        pods=[lambda f: pod(f, 1, T1, "Succeeded", RESULT_OK)],
        expect_phase="Succeeded", expect_mv="support-triage-v1", expect_loss=0.8),
    "success numbers after existing versions": dict(
        jobs=[lambda f, d: job(f, 1, d, "Complete")],
        pods=[lambda f: pod(f, 1, T1, "Succeeded", RESULT_OK)],
        versions=[modelversion("support-triage-v4", version=4, model="support-triage")],
        expect_phase="Succeeded", expect_mv="support-triage-v5"),
    "success reuses the version it already created": dict(
        jobs=[lambda f, d: job(f, 1, d, "Complete")],
        pods=[lambda f: pod(f, 1, T1, "Succeeded", RESULT_OK)],
        versions=[modelversion("support-triage-v2", version=2, model="support-triage",
                               annotations={"tuneops.io/job-uid": "uid-sft"})],
        expect_phase="Succeeded", expect_mv="support-triage-v2", expect_no_create=True),
    "success without artifact fails": dict(
        jobs=[lambda f, d: job(f, 1, d, "Complete")],
        pods=[lambda f: pod(f, 1, T1, "Succeeded", {"phase": "Succeeded"})],
        expect_phase="Failed", expect_reason="NoArtifact"),
    "pod reports failure with reason": dict(
        jobs=[lambda f, d: job(f, 1, d, "Failed", "BackoffLimitExceeded")],
        pods=[lambda f: pod(f, 1, T1, "Failed", {"phase": "Failed", "reason": "TooManyRejectedRows",
                                                   "message": "12% rows rejected > 5%"}, exit_code=2)],
        expect_phase="Failed", expect_reason="TooManyRejectedRows", expect_message="12% rows rejected"),
    "job failure without result uses the Job's reason": dict(
        jobs=[lambda f, d: job(f, 1, d, "Failed", "DeadlineExceeded")],
        pods=[lambda f: pod(f, 1, T1, "Failed", exit_code=137, reason="OOMKilled")],
        expect_phase="Failed", expect_reason="DeadlineExceeded"),
    "preempted pod then a resumed pod": dict(
        status={"lastCheckpoint": "s3://c/checkpoint-800", "phase": "Running"},
        jobs=[lambda f, d: job(f, 1, d)],
        pods=[lambda f: pod(f, 1, T1, "Failed", disrupted=True), lambda f: pod(f, 1, T2)],
        expect_phase="Running", expect_attempts=2, expect_attempt_reasons=["Preempted", None],
        expect_resumed="s3://c/checkpoint-800"),
    "spec edit of a running job starts revision 2": dict(
        jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)],
        spec_edit=lambda s: s["training"].update(learningRate=1e-4),
        expect_phase="Pending", expect_job="sft-r2", expect_delete=["sft-r1"],
        expect_attempt_reasons=["SpecChanged"], expect_event="SpecChanged"),
    "spec edit after success is ignored": dict(
        status={"phase": "Succeeded", "modelVersion": "support-triage-v1", "conditions": [
            {"type": "Succeeded", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
             "lastTransitionTime": "2026-11-25T08:30:00Z"}]},
        jobs=[lambda f, d: job(f, 1, d, "Complete")],
        spec_edit=lambda s: s["training"].update(learningRate=1e-4),
        expect_phase="Succeeded", expect_condition=("SpecChangeIgnored", "True"), expect_no_children=True),
    "invalid spec": dict(
        spec_edit=lambda s: s["lora"].update(r=0),
        expect_phase="Failed", expect_condition=("SpecValid", "False"), expect_message="spec.lora.r: must be > 0",
        expect_no_children=True),
}


@pytest.mark.parametrize("name", CASES)
def test_status_transitions(name):
    case = dict(CASES[name])
    ftj, _, observed = _case(case.get("status"), case.get("jobs", ()), case.get("pods", ()), case.get("progress"),
                             case.get("versions", ()), case.get("spec_edit"))
    plan = plan_finetunejob(ftj, observed, SETTINGS, NOW)
    st = plan.status
    assert st["phase"] == case["expect_phase"], st.get("message")
    generation = ftj["metadata"]["generation"]
    assert st["observedGeneration"] == generation
    for cond in st["conditions"]:
        assert cond["observedGeneration"] == generation and cond["lastTransitionTime"]
    if "expect_job" in case:
        assert st["trainingJob"] == case["expect_job"]
        assert plan.ensure[-1]["kind"] == "Job" and plan.ensure[-1]["metadata"]["name"] == case["expect_job"]
    if case.get("expect_no_children"):
        assert plan.ensure == [] and plan.model_version is None
    if "expect_attempts" in case:
        assert len(st.get("attempts", [])) == case["expect_attempts"]
    if "expect_attempt_reasons" in case:
        assert [a.get("reason") for a in st["attempts"]] == case["expect_attempt_reasons"]
    if "expect_resumed" in case:
        assert st["attempts"][-1]["resumedFrom"] == case["expect_resumed"]
    if "expect_summary" in case:
        assert st["progress"]["summary"] == case["expect_summary"]
        assert st["progress"]["etaSeconds"] == 1800  # 20 min for 1200 steps -> 30 min for 1800 more
        assert st["mlflow"]["runId"] == "r9" and st["lastCheckpoint"] == "s3://c/checkpoint-1200"
    if "expect_loss" in case:
        assert st["metrics"]["loss"] == case["expect_loss"]
    if "expect_mv" in case:
        assert st["modelVersion"] == case["expect_mv"]
        cond = {c["type"]: c for c in st["conditions"]}
        assert cond["Succeeded"]["status"] == "True" and cond["Training"]["status"] == "False"
        if case.get("expect_no_create"):
            assert plan.model_version is None
        else:
            mv = plan.model_version
            assert mv["metadata"]["name"] == case["expect_mv"]
            assert "ownerReferences" not in mv["metadata"]  # standalone: deleting the job keeps it
            assert mv["metadata"]["labels"]["tuneops.io/job"] == "sft"
            assert mv["spec"]["adapter"]["uri"] == "s3://b/sft/adapter"
            assert mv["spec"]["lineage"]["job"] == "sft" and mv["spec"]["lineage"]["mlflowRunId"] == "run-1"
            assert mv["spec"]["baseModel"] == {"family": "smollm2", "source": {"packaged": "smollm2-135m-instruct"},
                                               "trustRemoteCode": False}
    if "expect_reason" in case:
        failed = next(c for c in st["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == case["expect_reason"]
        assert st["message"].startswith(case["expect_reason"])
    if "expect_message" in case:
        assert case["expect_message"] in st["message"]
    if "expect_condition" in case:
        ctype, cstatus = case["expect_condition"]
        assert next(c for c in st["conditions"] if c["type"] == ctype)["status"] == cstatus
    if "expect_delete" in case:
        assert plan.delete_jobs == case["expect_delete"]
    if "expect_event" in case:
        assert case["expect_event"] in [e.reason for e in plan.events]


def test_replanning_the_same_observation_is_stable():
    """Idempotence: applying the plan's status and planning again changes nothing and emits no events."""
    ftj, _, observed = _case(jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)],
                             progress={"phase": "Running", "step": 5, "totalSteps": 10})
    first = plan_finetunejob(ftj, observed, SETTINGS, NOW)
    assert [e.reason for e in first.events] == ["Running"]
    ftj2 = copy.deepcopy(ftj)
    ftj2["status"] = first.status
    second = plan_finetunejob(ftj2, observed, SETTINGS, NOW.replace(minute=30))
    assert second.status == first.status and second.events == []


def test_condition_transition_time_moves_only_on_status_flip():
    ftj, _, observed = _case(jobs=[lambda f, d: job(f, 1, d)], pods=[lambda f: pod(f, 1, T1)])
    first = plan_finetunejob(ftj, observed, SETTINGS, NOW)
    ftj["status"] = first.status
    done = FtjObserved(jobs=[job(ftj, 1, _digest(ftj), "Complete")],
                       pods=[pod(ftj, 1, T1, "Succeeded", RESULT_OK)])
    later = plan_finetunejob(ftj, done, SETTINGS, NOW.replace(hour=10))
    before = {c["type"]: c for c in first.status["conditions"]}
    after = {c["type"]: c for c in later.status["conditions"]}
    assert after["SpecValid"]["lastTransitionTime"] == before["SpecValid"]["lastTransitionTime"]
    assert after["Training"]["lastTransitionTime"] == "2026-11-25T10:00:00Z"
    assert [e.reason for e in later.events] == ["ModelVersionCreated", "Succeeded"]


def test_examples_are_valid_inputs():
    for name in ("smollm2-lora.yaml", "llama3-qlora.yaml"):
        FineTuneJobSpec.model_validate(example(name)["spec"])


# ---------------------------------------------------------------------------------------------------------
# Preflight (tuneops.planning, in-process): a failing check stops the job before any Job is created.

def _big_on_t4(spec):
    spec.update(baseModel={"family": "llama3", "source": {"hf": "meta-llama/Meta-Llama-3-8B-Instruct"}},
                method="full", resources={"gpu": {"count": 1, "product": "Tesla-T4"}})
    spec.pop("lora", None)


@pytest.mark.parametrize("edit, check, text", [
    (_big_on_t4, "memory", "per GPU (full, single, 1 process(es)) > 14.5 GiB usable on resources.gpu.product Tesla-T4"),
    (lambda s: s["lora"].update(targetModules=["q_projx"]), "lora.targetModules",
     "lora.targetModules: 'q_projx' not found in SmolLM2-135M; available: q_proj"),
])
def test_failing_preflight_fails_the_job_and_creates_nothing(edit, check, text):
    ftj = finetunejob("sft")
    edit(ftj["spec"])
    plan = plan_finetunejob(ftj, FtjObserved(), SETTINGS, NOW)
    st = plan.status
    assert plan.ensure == [] and plan.model_version is None and "trainingJob" not in st
    assert st["phase"] == "Failed" and st["message"].startswith(f"PreflightFailed: {check}") and text in st["message"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Failed"]["reason"] == "PreflightFailed" and conds["Preflight"]["status"] == "False"
    failed = [c for c in st["plan"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == [check]
    assert [e.reason for e in plan.events] == ["Failed"]
    # Reconciling again changes nothing; fixing the spec starts the training Job.
    ftj["status"] = st
    again = plan_finetunejob(ftj, FtjObserved(), SETTINGS, NOW.replace(minute=5))
    assert again.status == st and again.ensure == [] and again.events == []
    fixed = finetunejob("sft", status=st, generation=2)
    after = plan_finetunejob(fixed, FtjObserved(), SETTINGS, NOW.replace(minute=10))
    assert after.status["phase"] == "Pending" and after.ensure[-1]["kind"] == "Job"
    assert "completionTime" not in after.status
    assert {c["type"]: c["status"] for c in after.status["conditions"]}["Preflight"] == "True"


def test_passing_preflight_writes_the_plan_before_the_job():
    ftj = finetunejob("sft")
    plan = plan_finetunejob(ftj, FtjObserved(), SETTINGS, NOW)
    assert plan.ensure[-1]["kind"] == "Job" and plan.status["phase"] == "Pending"
    written = plan.status["plan"]
    assert written["ok"] and written["model"] == "SmolLM2-135M" and written["device"] == "cpu"
    assert written["trainableParameters"] == 2_442_240
    from tuneops.api.plan import Plan

    Plan.model_validate(written)  # the status field's own schema


def test_failing_preflight_does_not_stop_a_job_that_already_runs():
    """An operator upgrade that adds a check must not kill a training that was already started."""
    ftj = finetunejob("sft")
    ftj["spec"]["lora"]["targetModules"] = ["q_projx"]
    d = _digest(ftj)
    plan = plan_finetunejob(ftj, FtjObserved(jobs=[job(ftj, 1, d)], pods=[pod(ftj, 1, "2026-11-25T08:01:00Z")]),
                            SETTINGS, NOW)
    assert plan.status["phase"] == "Running" and plan.status["plan"]["ok"] is False
