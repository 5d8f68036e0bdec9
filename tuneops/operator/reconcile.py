"""Reconcilers: read the resource and its children, call the pure planner, apply the plan.

Each returns seconds until it wants to look again (or None). They are level-based and idempotent, so kopf
handlers, child events and timers can all call them, and a kill at any point is repaired by the next run.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import ftj_children, md_children, metrics
from .ftj_plan import FtjObserved, plan_finetunejob
from .gitops_writeback import WriteBack, WriteBackError, push_revert
from .kube import ApiError, Kube
from .md_plan import SlotMetrics, observe_slot, plan_modeldeployment, record_write_back
from .meta import FTJ_LABEL, JOB_UID_ANNOTATION, VERSION_ANNOTATION, label_value, status_patch
from .mv import local_artifact_check, model_version_status
from .settings import OperatorSettings

log = logging.getLogger("tuneops.operator")

Key = tuple[str, str, str]  # (kind, namespace, name)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, clock: Callable[[], datetime] = utcnow,
                 slot_metrics: Callable[[dict, str], SlotMetrics | None] | None = None):
        self.kube = kube
        self.settings = settings
        self.clock = clock
        # Metric gates read the preview slot's error rate / latency through this hook (None: not measured).
        self.slot_metrics = slot_metrics
        self._locks: dict[Key, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def __call__(self, key: Key) -> float | None:
        kind, namespace, name = key
        with self._locks_guard:
            lock = self._locks[key]
        with lock, metrics.observe(kind):  # one reconcile per object at a time, whoever asks
            return {"FineTuneJob": self.finetunejob, "ModelVersion": self.modelversion,
                    "ModelDeployment": self.modeldeployment}[kind](namespace, name)

    # -- FineTuneJob ------------------------------------------------------------------------------------
    def finetunejob(self, namespace: str, name: str) -> float | None:
        ftj = self.kube.get("FineTuneJob", namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp"):
            return None
        selector = {FTJ_LABEL: label_value(name)}
        jobs = self.kube.list("Job", namespace, selector)
        pods = self.kube.list("Pod", namespace, selector) if jobs else []
        cm = self.kube.get("ConfigMap", namespace, ftj_children.progress_configmap_name(name)) if jobs else None
        model = ((ftj.get("spec") or {}).get("output") or {}).get("registeredModel")
        versions = [] if not _job_complete(jobs) else [
            mv for mv in self.kube.list("ModelVersion", namespace) if (mv.get("spec") or {}).get("model") == model]
        observed = FtjObserved(jobs=jobs, pods=pods, progress=_progress(cm), versions=versions)
        plan = plan_finetunejob(ftj, observed, self.settings, self.clock())

        existing_jobs = {j["metadata"]["name"] for j in jobs}
        if plan.ensure and plan.ensure[-1]["metadata"]["name"] not in existing_jobs:
            # Created in order, the Job last: if the Job exists, so does everything it mounts.
            for obj in plan.ensure:
                _, created = self.kube.create(obj)
                if created:
                    metrics.CHILDREN.labels(obj["kind"]).inc()
        for job in plan.delete_jobs:
            self.kube.delete("Job", namespace, job)
        if plan.model_version is not None:
            mv, created = self.kube.create(plan.model_version)
            if not created and (mv["metadata"].get("annotations") or {}).get(JOB_UID_ANNOTATION) != ftj["metadata"]["uid"]:
                raise ApiError(409, "POST", "modelversions", f"{mv['metadata']['name']} belongs to another job")
            if created:
                metrics.CHILDREN.labels("ModelVersion").inc()
        self._finish(ftj, plan.status, plan.events)
        return None

    # -- ModelVersion -----------------------------------------------------------------------------------
    def modelversion(self, namespace: str, name: str) -> float | None:
        mv = self.kube.get("ModelVersion", namespace, name)
        if mv is None or mv["metadata"].get("deletionTimestamp"):
            return None
        deployed_by = [md["metadata"]["name"] for md in self.kube.list("ModelDeployment", namespace)
                       if name in ((md.get("status") or {}).get("activeVersion"),
                                   (md.get("status") or {}).get("previewVersion"))]
        check = local_artifact_check if self.settings.verify_local_artifacts else None
        status, events = model_version_status(mv, check, deployed_by, self.clock())
        self._finish(mv, status, events)
        return None

    # -- ModelDeployment --------------------------------------------------------------------------------
    def modeldeployment(self, namespace: str, name: str) -> float | None:
        md = self.kube.get("ModelDeployment", namespace, name)
        if md is None or md["metadata"].get("deletionTimestamp"):
            return None
        deployments = {slot: self.kube.get("Deployment", namespace, md_children.slot_deployment_name(name, slot))
                       for slot in md_children.SLOTS}
        spec, status = md.get("spec") or {}, md.get("status") or {}
        wanted = {spec.get("activeVersion"), spec.get("previewVersion"), status.get("activeVersion")}
        wanted |= {(d["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION) for d in deployments.values() if d}
        versions = {v: self.kube.get("ModelVersion", namespace, v) for v in wanted if v}
        slot_metrics = ({slot: m for slot in md_children.SLOTS if (m := self.slot_metrics(md, slot)) is not None}
                        if self.slot_metrics else None)
        plan = plan_modeldeployment(md, {s: observe_slot(d) for s, d in deployments.items()}, versions,
                                    self.settings, self.clock(), slot_metrics)
        # Slots first, then the Services: a selector only moves to a slot already observed Ready.
        for obj in [*plan.config_maps, *plan.deployments, *plan.services, *([plan.hpa] if plan.hpa else []),
                    *([plan.pdb] if plan.pdb else [])]:
            self.kube.ensure(obj)
        if plan.delete_hpa and status.get("activeSlot") is not None:
            self.kube.delete("HorizontalPodAutoscaler", namespace, name)
        self._finish(md, plan.status, plan.events)
        if plan.write_back is not None:
            # After the switch is recorded: traffic never waits for Git. A failure is retried (requeue).
            written = dict(plan.status)
            event = record_write_back(written, *self._write_back(plan.write_back))
            self._finish({**md, "status": plan.status}, written, [event])
        return plan.requeue_after + 0.5 if plan.requeue_after else None

    def _write_back(self, request: WriteBack) -> tuple[str, str | None, str]:
        """(state, commit, message) of committing the reverted activeVersion to Git; never raises."""
        try:
            credentials = self._git_credentials(request)
            result = push_revert(request, credentials)
        except (WriteBackError, ApiError, OSError, ValueError) as exc:
            log.warning("ModelDeployment %s/%s: Git write-back failed: %s", request.namespace, request.name, exc)
            return "Failed", None, str(exc)[:1000]
        log.info("ModelDeployment %s/%s: Git write-back %s: %s", request.namespace, request.name, result.state,
                 result.message)
        return result.state, result.commit, result.message

    def _git_credentials(self, request: WriteBack) -> dict[str, str]:
        """The Secret named by gitWriteBack.secretRef, decoded (values never logged)."""
        ref = request.git.secret_ref
        if ref is None:
            return {}
        secret = self.kube.request("GET", f"/api/v1/namespaces/{request.namespace}/secrets/{ref.name}")
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    # -- shared -----------------------------------------------------------------------------------------
    def _finish(self, obj: dict[str, Any], status: dict[str, Any], events) -> None:
        meta = obj["metadata"]
        patch = status_patch(obj.get("status"), status)
        if patch is not None:
            self.kube.patch_status(obj["kind"], meta["namespace"], meta["name"], patch)
            log.info("%s %s/%s: status updated (phase %s)", obj["kind"], meta["namespace"], meta["name"],
                     status.get("phase"), extra={"kind": obj["kind"], "object": f"{meta['namespace']}/{meta['name']}",
                                                 "phase": status.get("phase")})
        for event in events:
            log.info("%s %s/%s: %s %s", obj["kind"], meta["namespace"], meta["name"], event.reason, event.message,
                     extra={"kind": obj["kind"], "object": f"{meta['namespace']}/{meta['name']}",
                            "reason": event.reason})
            self.kube.post_event(obj, event)


def _job_complete(jobs: list[dict]) -> bool:
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for j in jobs for c in (j.get("status") or {}).get("conditions") or [])


def _progress(cm: dict | None) -> dict | None:
    raw = ((cm or {}).get("data") or {}).get("progress")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring unparsable progress in %s", (cm or {}).get("metadata", {}).get("name"))
        return None
    return value if isinstance(value, dict) else None
