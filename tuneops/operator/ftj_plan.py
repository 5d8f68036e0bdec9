"""FineTuneJob reconcile decision: (resource, observed children) -> children to create, status, events.

Pure: the handler lists the children, calls `plan_finetunejob`, applies the plan. Every decision is derived
from what is observed (Jobs carry their revision and spec hash), so a reconcile interrupted at any point and
run again makes the same decisions and never duplicates a child.

Lifecycle (documented behaviour):
- Invalid spec -> phase Failed, condition SpecValid=False reason Invalid, message names the fields.
- Spec edited while unfinished (or after a failure) -> new revision: the old Job is deleted, Job `<name>-r<k+1>`
  starts and resumes from the newest checkpoint; the running attempt ends with reason SpecChanged.
- Spec edited after success -> ignored (a new result needs a new FineTuneJob); condition SpecChangeIgnored.
- Status.attempts has one entry per training pod (pod 0 for multi-node): preempted pods end with reason
  Preempted and do not count against backoffLimit (podFailurePolicy), the next pod resumes from checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tuneops.api import FineTuneJobSpec, InvalidResource, parse_spec
from tuneops.planning import failure_message, plan_job

from . import ftj_children as kids
from .ftj_attempts import track_attempts
from .meta import (
    REVISION_LABEL, SPEC_HASH_ANNOTATION, Event, parse_time, rfc3339, set_condition, spec_hash,
)
from .mv import model_version_for_job, pick_version
from .settings import OperatorSettings

ACTIVE_PHASES = ("Preparing", "Running", "Evaluating")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass
class FtjObserved:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)  # ModelVersions of spec.output.registeredModel


@dataclass
class FtjPlan:
    status: dict[str, Any]
    ensure: list[dict[str, Any]] = field(default_factory=list)
    delete_jobs: list[str] = field(default_factory=list)
    model_version: dict[str, Any] | None = None  # to create (None when it exists or is not wanted)
    events: list[Event] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Reading observed objects

def revision_of(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("labels") or {}).get(REVISION_LABEL, 0))


def job_outcome(job: dict[str, Any] | None) -> tuple[str | None, str, str]:
    """('Complete' | 'Failed' | None, reason, message) from the Job's conditions."""
    for cond in (job or {}).get("status", {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return cond["type"], cond.get("reason") or cond["type"], cond.get("message") or ""
    return None, "", ""


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == kids.CONTAINER and "terminated" in (cs.get("state") or {}):
            return cs["state"]["terminated"]
    return None


def pod_result(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The trainer's JSON result from its termination message (None if absent or not JSON)."""
    term = _terminated(pod)
    try:
        result = json.loads((term or {}).get("message") or "")
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def _primary(pod: dict[str, Any]) -> bool:
    """Pod 0 stands for the attempt in multi-node jobs; single-pod jobs have no index annotation."""
    return (pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "0") == "0"


def _progress_view(progress: dict[str, Any], attempt_start: str | None, done: bool) -> dict[str, Any]:
    step = int(progress.get("step") or 0)
    total = progress.get("totalSteps")
    view: dict[str, Any] = {"step": step}
    if progress.get("epoch") is not None:
        view["epoch"] = float(progress["epoch"])
    if total:
        total = int(total)
        if done:
            step = view["step"] = total
        percent = min(100, step * 100 // total)
        view.update(totalSteps=total, percent=percent, summary=f"{percent}% ({step}/{total})")
        updated, started = parse_time(progress.get("updated")), parse_time(attempt_start)
        if not done and step and updated and started and updated > started:
            view["etaSeconds"] = int((updated - started).total_seconds() / step * (total - step))
    else:
        view["summary"] = f"step {step}"
    return view


def _float_metrics(*sources: dict[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for src in sources:
        for key, value in (src or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
    return out


# ---------------------------------------------------------------------------------------------------------
# The decision

def plan_finetunejob(ftj: dict[str, Any], observed: FtjObserved, settings: OperatorSettings,
                     now: datetime) -> FtjPlan:
    meta = ftj["metadata"]
    gen = meta.get("generation")
    old: dict[str, Any] = dict(ftj.get("status") or {})
    conditions = list(old.get("conditions") or [])
    status: dict[str, Any] = {k: v for k, v in old.items() if v is not None}
    status["observedGeneration"] = gen

    try:
        spec = parse_spec(FineTuneJobSpec, ftj.get("spec") or {})
    except InvalidResource as exc:
        conditions = set_condition(conditions, "SpecValid", "False", "Invalid", str(exc), gen, now)
        status.update(phase="Failed", message=f"invalid spec: {exc}", conditions=conditions)
        status.setdefault("completionTime", rfc3339(now))
        return FtjPlan(status=status, events=_phase_events(old, status))
    conditions = set_condition(conditions, "SpecValid", "True", "Validated", "spec is valid", gen, now)
    digest = spec_hash(spec.to_wire())

    jobs = sorted(observed.jobs, key=revision_of)
    current = jobs[-1] if jobs else None
    plan = FtjPlan(status=status)
    events: list[Event] = []

    # A finished success is final: edits are ignored, a deleted Job is not re-run.
    if old.get("phase") == "Succeeded":
        if current is None or current["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION) != digest:
            conditions = set_condition(conditions, "SpecChangeIgnored", "True", "AlreadySucceeded",
                                       "the job already succeeded; create a new FineTuneJob to train again",
                                       gen, now)
        # The controller has seen this generation and the outcome still stands: say so on every condition.
        status["conditions"] = [{**c, "observedGeneration": gen} if gen is not None else c for c in conditions]
        return plan

    if current is None:
        match = re.search(r"-r(\d+)$", old.get("trainingJob") or "")
        revision = int(match.group(1)) if match else 1
    elif current["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION) != digest:
        revision = revision_of(current) + 1
        events.append(Event("Normal", "SpecChanged",
                            f"spec changed: stopping {current['metadata']['name']}, starting revision {revision} "
                            "(resumes from the last checkpoint)"))
    else:
        revision = revision_of(current)
    plan.delete_jobs = [j["metadata"]["name"] for j in jobs
                        if revision_of(j) < revision and job_outcome(j)[0] is None]
    plan.ensure = kids.children(ftj, spec, revision, digest, settings)
    job = next((j for j in jobs if revision_of(j) == revision), None)
    if _preflight_stops(spec, job, status, conditions, gen, now):  # nothing is created for a failing preflight
        plan.ensure = []
        plan.events = events + _phase_events(old, status)
        return plan
    status["trainingJob"] = kids.job_name(meta["name"], revision)

    # Attempts: one per training pod (see ftj_attempts), resumedFrom from the checkpoint published before it.
    pods = sorted((p for p in observed.pods if _primary(p)), key=lambda p: p["metadata"]["creationTimestamp"])
    tracked = track_attempts(old, pods, revision, observed.progress, now)
    attempts = tracked.attempts
    events += tracked.events
    if attempts:
        status["attempts"] = attempts
        status["attemptCount"] = tracked.count
        status.setdefault("startTime", attempts[0]["start"])

    # Progress reported by the trainer (ConfigMap), then the Job's outcome.
    progress = observed.progress or {}
    if progress:
        status["metrics"] = _float_metrics(progress.get("metrics"))
        if progress.get("mlflowRunId"):
            status["mlflow"] = {**(old.get("mlflow") or {}), "runId": progress["mlflowRunId"]}
        if progress.get("lastCheckpoint"):
            status["lastCheckpoint"] = progress["lastCheckpoint"]
    outcome, job_reason, job_message = job_outcome(job)
    current_pods = [p for p in pods if revision_of(p) == revision]
    current_attempt = attempts[-1]["start"] if attempts else None

    if outcome == "Complete":
        succeeded = [p for p in current_pods if p.get("status", {}).get("phase") == "Succeeded"]
        result = pod_result(succeeded[-1]) if succeeded else None
        if result and result.get("phase") == "Failed":
            _fail(status, result.get("reason") or "TrainingFailed", result.get("message") or "", result)
        else:
            _succeed(ftj, spec, digest, result, observed, status, plan, now)
    elif outcome == "Failed":
        failed = [p for p in current_pods if p.get("status", {}).get("phase") == "Failed"]
        result = pod_result(failed[-1]) if failed else None
        reason = (result or {}).get("reason") or job_reason
        message = (result or {}).get("message") or job_message or f"the training Job failed ({job_reason})"
        _fail(status, reason, message, result)
    else:
        running = any(p.get("status", {}).get("phase") == "Running" and revision_of(p) == revision
                      for p in current_pods)
        if running:
            reported = progress.get("phase")
            status["phase"] = reported if reported in ACTIVE_PHASES else "Running"
        else:
            status["phase"] = "Pending"
        status["message"] = ("waiting for the training pod to start" if status["phase"] == "Pending"
                             else f"{status['phase'].lower()}: attempt {tracked.count}")
        status.pop("completionTime", None)
    if progress:
        status["progress"] = _progress_view(progress, current_attempt, status.get("phase") == "Succeeded")

    conditions = _lifecycle_conditions(conditions, status, gen, now)
    if status["phase"] in ("Succeeded", "Failed"):
        status.setdefault("completionTime", rfc3339(now))
    status["conditions"] = conditions
    plan.events = events + plan.events + _phase_events(old, status)
    return plan


def _preflight_stops(spec: FineTuneJobSpec, job: dict[str, Any] | None, status: dict[str, Any],
                     conditions: list[dict], gen: int | None, now: datetime) -> bool:
    """The cheap preflight (tuneops.planning: architecture, LoRA targets, memory vs resources.gpu) goes to
    status.plan; when it fails before the revision's Job exists, the job fails with PreflightFailed."""
    preflight = plan_job(spec)
    status["plan"] = preflight.model_dump(mode="json", by_alias=True, exclude_none=True)
    if preflight.ok:
        conditions[:] = set_condition(conditions, "Preflight", "True", "Passed", "preflight checks passed", gen, now)
        return False
    message = failure_message(preflight)
    conditions[:] = set_condition(conditions, "Preflight", "False", "PreflightFailed", message, gen, now)
    if job is not None:  # a Job already runs for this spec (e.g. an operator upgrade): do not stop it
        return False
    _fail(status, "PreflightFailed", message, None)
    status["conditions"] = _lifecycle_conditions(conditions, status, gen, now)
    status.setdefault("completionTime", rfc3339(now))
    return True


def _succeed(ftj: dict[str, Any], spec: FineTuneJobSpec, digest: str, result: dict[str, Any] | None,
             observed: FtjObserved, status: dict[str, Any], plan: FtjPlan, now: datetime) -> None:
    result = result or {}
    status["metrics"] = {**status.get("metrics", {}), **_float_metrics(result.get("metrics"))}
    if result.get("mlflowRunId"):
        status["mlflow"] = {**(status.get("mlflow") or {}), "runId": result["mlflowRunId"]}
    if result.get("datasetHash"):
        status["datasetHash"] = result["datasetHash"]
    if not spec.output.create_model_version:
        status.update(phase="Succeeded", message="training succeeded (output.createModelVersion is false)")
        return
    existing, number = pick_version(observed.versions, ftj["metadata"]["uid"])
    if existing:
        status.update(phase="Succeeded", modelVersion=existing, message=f"created ModelVersion {existing}")
        return
    if not (result.get("adapterUri") or result.get("mergedUri")):
        _fail(status, "NoArtifact", "the training pod's termination message has no adapterUri or mergedUri", result)
        return
    try:
        mv = model_version_for_job(ftj, spec, result, number, digest)
    except InvalidResource as exc:
        _fail(status, "InvalidResult", str(exc), result)
        return
    plan.model_version = mv
    name = mv["metadata"]["name"]
    status.update(phase="Succeeded", modelVersion=name, message=f"created ModelVersion {name}")
    plan.events.append(Event("Normal", "ModelVersionCreated", f"created ModelVersion {name}"))


def _fail(status: dict[str, Any], reason: str, message: str, result: dict[str, Any] | None) -> None:
    reason = re.sub(r"[^A-Za-z0-9_]", "", reason) or "Failed"
    status.update(phase="Failed", message=f"{reason}: {message}" if message else reason, failureReason=reason)
    if result and result.get("metrics"):
        status["metrics"] = {**status.get("metrics", {}), **_float_metrics(result["metrics"])}


def _lifecycle_conditions(conditions: list[dict], status: dict[str, Any], gen: int | None,
                          now: datetime) -> list[dict]:
    phase = status["phase"]
    reason = status.pop("failureReason", None) or phase
    message = status.get("message") or ""
    active = phase not in ("Succeeded", "Failed")
    conditions = set_condition(conditions, "Training", "True" if active else "False", reason, message, gen, now)
    if phase == "Succeeded":
        conditions = set_condition(conditions, "Succeeded", "True", "Succeeded", message, gen, now)
        if status.get("modelVersion"):
            conditions = set_condition(conditions, "ModelVersionCreated", "True", "Created",
                                       status["modelVersion"], gen, now)
    else:
        conditions = [c for c in conditions if c["type"] != "Succeeded"]
    if phase == "Failed":
        conditions = set_condition(conditions, "Failed", "True", reason, message, gen, now)
    else:
        conditions = [c for c in conditions if c["type"] != "Failed"]
    return conditions


def _phase_events(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    if old.get("phase") == new.get("phase"):
        return []
    kind = "Warning" if new["phase"] == "Failed" else "Normal"
    return [Event(kind, new["phase"], new.get("message") or new["phase"])]
