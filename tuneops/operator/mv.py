"""ModelVersion: the one a successful FineTuneJob creates, and the status transitions (pure functions).

A ModelVersion made by a job is *standalone* (no ownerReference to the job) and labelled
`tuneops.io/job=<job>`: deleting a finished job must never delete a version that a ModelDeployment serves.
Its name is `<registeredModel>-v<N>`, N = 1 + the highest version of that model in the namespace; the job's
uid (annotation) makes a retried reconcile find the version it already created instead of making another.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from tuneops.api import FineTuneJobSpec, InvalidResource, ModelVersionSpec, parse_spec
from tuneops.api.evaluation import EvaluationResult

from .meta import (
    CR_API_VERSION, JOB_LABEL, JOB_UID_ANNOTATION, MODEL_LABEL, Event, common_labels, label_value, rfc3339,
    set_condition,
)


def version_name(model: str, number: int) -> str:
    return f"{model}-v{number}"


def pick_version(versions: list[dict[str, Any]], job_uid: str) -> tuple[str | None, int]:
    """(name of the version this job already created or None, the next free number)."""
    numbers = [0]
    for mv in versions:
        if (mv["metadata"].get("annotations") or {}).get(JOB_UID_ANNOTATION) == job_uid:
            return mv["metadata"]["name"], int(mv["spec"]["version"])
        numbers.append(int((mv.get("spec") or {}).get("version", 0)))
    return None, max(numbers) + 1


def _artifact(uri: str | None, dtype: str | None = None) -> dict[str, Any] | None:
    if not uri:
        return None
    return {"uri": uri, "format": "safetensors", **({"dtype": dtype} if dtype else {})}


def model_version_for_job(ftj: dict[str, Any], spec: FineTuneJobSpec, result: dict[str, Any], number: int,
                          digest: str) -> dict[str, Any]:
    """The ModelVersion a successful job registers, from its spec and the pod's result (termination message).

    Raises InvalidResource (naming the result field) when the result cannot make a valid ModelVersion."""
    name, namespace = ftj["metadata"]["name"], ftj["metadata"]["namespace"]
    model = spec.output.registered_model
    body: dict[str, Any] = {
        "model": model, "version": number, "baseModel": spec.base_model.to_wire(),
        "lineage": {k: v for k, v in {
            "job": name, "datasetHash": result.get("datasetHash"), "datasetUri": spec.dataset.source,
            "mlflowRunId": result.get("mlflowRunId"), "specHash": digest}.items() if v},
    }
    if adapter := _artifact(result.get("adapterUri")):
        body["adapter"] = adapter
    if merged := _artifact(result.get("mergedUri"), spec.output.merged_dtype):
        body["merged"] = merged
    if result.get("evaluation"):
        body["evaluation"] = result["evaluation"]
    if result.get("registry"):
        body["registry"] = result["registry"]
    validated = parse_spec(ModelVersionSpec, body, prefix="modelVersion.spec")
    labels = common_labels(JOB_LABEL, name, "model-version")
    labels[MODEL_LABEL] = label_value(model)
    return {
        "apiVersion": CR_API_VERSION, "kind": "ModelVersion",
        "metadata": {"name": version_name(model, number), "namespace": namespace, "labels": labels,
                     "annotations": {JOB_UID_ANNOTATION: ftj["metadata"]["uid"]}},
        "spec": validated.to_wire(),
    }


# ---------------------------------------------------------------------------------------------------------
# Status

ArtifactCheck = Callable[[str], "bool | None"]


def local_artifact_check(uri: str) -> bool | None:
    """True/False for paths this process can see; None (unknown) for object stores it has no credentials for."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if uri.startswith("/"):
        return Path(uri).exists()
    return None


def _verdict_message(evaluation: EvaluationResult) -> str:
    failed = [c for c in evaluation.checks if not c.passed]
    if not failed:
        return f"eval gate {evaluation.verdict}"
    return "eval gate failed: " + "; ".join(f"{c.metric}: {c.reason or 'failed'}" for c in failed)


def model_version_status(mv: dict[str, Any], check: ArtifactCheck | None, deployed_by: list[str],
                         now: datetime) -> tuple[dict[str, Any], list[Event]]:
    """Pending -> Ready | Rejected (eval gate failed) | Failed (invalid or missing artifact)."""
    old = mv.get("status") or {}
    gen = mv["metadata"].get("generation")
    conditions = list(old.get("conditions") or [])
    status: dict[str, Any] = {"observedGeneration": gen, "createdTime": old.get("createdTime")
                              or mv["metadata"].get("creationTimestamp") or rfc3339(now)}
    if deployed_by:
        status["deployedBy"] = sorted(deployed_by)
    try:
        spec = parse_spec(ModelVersionSpec, mv.get("spec") or {})
    except InvalidResource as exc:
        conditions = set_condition(conditions, "Ready", "False", "Invalid", str(exc), gen, now)
        status.update(phase="Failed", message=f"invalid spec: {exc}", conditions=conditions)
        return status, _transition(old, status)

    missing: list[str] = []
    unknown: list[str] = []
    for art in (a for a in (spec.adapter, spec.merged) if a is not None):
        found = check(art.uri) if check else None
        (unknown if found is None else missing if not found else []).append(art.uri)
    if missing:
        conditions = set_condition(conditions, "ArtifactVerified", "False", "ArtifactMissing",
                                   "not found: " + ", ".join(missing), gen, now)
    elif unknown:
        conditions = set_condition(conditions, "ArtifactVerified", "Unknown", "NotVerifiable",
                                   "the operator cannot read " + ", ".join(unknown), gen, now)
    else:
        conditions = set_condition(conditions, "ArtifactVerified", "True", "Found", "artifacts exist", gen, now)

    evaluation = spec.evaluation
    if evaluation is not None:
        status["evaluation"] = evaluation.to_wire()
        eval_status = {"Passed": "True", "Failed": "False"}.get(evaluation.verdict, "Unknown")
        conditions = set_condition(conditions, "EvalPassed", eval_status, evaluation.verdict,
                                   _verdict_message(evaluation), gen, now)
    else:
        conditions = set_condition(conditions, "EvalPassed", "Unknown", "NotEvaluated", "no evaluation recorded",
                                   gen, now)

    if missing:
        phase, reason, message = "Failed", "ArtifactMissing", "artifact not found: " + ", ".join(missing)
    elif evaluation is not None and evaluation.verdict == "Failed":
        phase, reason, message = "Rejected", "EvalGateFailed", _verdict_message(evaluation)
    else:
        phase, reason, message = "Ready", "Ready", f"{spec.model} v{spec.version} is ready to serve"
    conditions = set_condition(conditions, "Ready", "True" if phase == "Ready" else "False", reason, message,
                               gen, now)
    status.update(phase=phase, message=message, conditions=conditions)
    return status, _transition(old, status)


def _transition(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    if old.get("phase") == new["phase"]:
        return []
    kind = "Normal" if new["phase"] == "Ready" else "Warning"
    return [Event(kind, new["phase"], new.get("message") or "")]
