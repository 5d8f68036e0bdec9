"""kopf handlers: thin. They only turn events into "reconcile this object" keys on the work queue.

- Parents (FineTuneJob, ModelVersion, ModelDeployment): create/update/resume. Resume runs for every object
  when the operator starts, which is what makes a killed operator converge.
- Children (Jobs, Pods, progress ConfigMaps, slot Deployments) and ModelVersions: event handlers that map the
  object to its parent(s). No finalizers anywhere: no external state needs cleaning, and deletes never hang
  when the operator is down (children are garbage-collected through ownerReferences).
"""

from __future__ import annotations

from typing import Any

import kopf

from tuneops.api import GROUP, VERSION

from .kube import Kube
from .meta import FTJ_LABEL, MANAGED_BY, MD_LABEL
from .workqueue import WorkQueue

# Child events come in bursts (a pod is created, scheduled, started...): look at the parent once per burst.
CHILD_DEBOUNCE = 0.5
PARENTS = {"FineTuneJob": "finetunejobs", "ModelVersion": "modelversions", "ModelDeployment": "modeldeployments"}
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _owner(meta: dict[str, Any], kind: str) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return ref["name"]
    return None


def needs_reconcile(event_type: str | None, body: dict[str, Any]) -> bool:
    """A parent event matters when the object is new to us (listing/ADDED) or its spec generation is not yet
    reflected in status; our own status writes (observedGeneration == generation) are skipped."""
    if event_type == "DELETED":
        return False
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return event_type in (None, "ADDED") or status.get("observedGeneration") != meta.get("generation")


def register(registry: kopf.OperatorRegistry, queue: WorkQueue, kube: Kube, parents: str = "causes") -> None:
    """Attach all handlers to `registry` (a fresh registry per operator keeps tests isolated).

    parents="causes" (default): kopf's create/update/resume handlers (kopf diffs every event and annotates
    every object). parents="events" (experimental, TUNEOPS_PARENT_HANDLERS=events): filtered event handlers,
    no per-object kopf state; faster, but kopf then runs no peering, so only for a single replica."""

    def parent_handler(kind: str):
        def enqueue(name: str, namespace: str, **_: Any) -> None:
            queue.add((kind, namespace, name))
        return enqueue

    def parent_event(kind: str):
        def on_event(name: str, namespace: str, type: str | None, body: dict[str, Any], **_: Any) -> None:
            if needs_reconcile(type, body):
                queue.add((kind, namespace, name))
        return on_event

    for kind, plural in PARENTS.items():
        if parents == "events":
            kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"{kind}-event")(parent_event(kind))
            continue
        handler = parent_handler(kind)
        kopf.on.resume(GROUP, VERSION, plural, registry=registry, id=f"{kind}-resume")(handler)
        kopf.on.create(GROUP, VERSION, plural, registry=registry, id=f"{kind}-create")(handler)
        kopf.on.update(GROUP, VERSION, plural, registry=registry, id=f"{kind}-update", field="spec")(handler)

    @kopf.on.event("batch", "v1", "jobs", labels={**MANAGED, FTJ_LABEL: kopf.PRESENT}, registry=registry)
    def job_event(meta: dict[str, Any], namespace: str, **_: Any) -> None:
        if parent := _owner(meta, "FineTuneJob"):
            queue.add(("FineTuneJob", namespace, parent), delay=CHILD_DEBOUNCE)

    @kopf.on.event("", "v1", "configmaps", labels={**MANAGED, FTJ_LABEL: kopf.PRESENT,
                                                   "app.kubernetes.io/component": "progress"}, registry=registry)
    def progress_event(meta: dict[str, Any], namespace: str, **_: Any) -> None:
        if parent := _owner(meta, "FineTuneJob"):
            queue.add(("FineTuneJob", namespace, parent), delay=CHILD_DEBOUNCE)

    @kopf.on.event("", "v1", "pods", labels={**MANAGED, FTJ_LABEL: kopf.PRESENT}, registry=registry)
    def pod_event(meta: dict[str, Any], namespace: str, **_: Any) -> None:
        if parent := (meta.get("annotations") or {}).get(FTJ_LABEL):
            queue.add(("FineTuneJob", namespace, parent), delay=CHILD_DEBOUNCE)

    @kopf.on.event("apps", "v1", "deployments", labels={**MANAGED, MD_LABEL: kopf.PRESENT}, registry=registry)
    def slot_event(meta: dict[str, Any], namespace: str, **_: Any) -> None:
        if parent := _owner(meta, "ModelDeployment"):
            queue.add(("ModelDeployment", namespace, parent), delay=CHILD_DEBOUNCE)

    @kopf.on.event(GROUP, VERSION, "modelversions", registry=registry)
    def version_event(name: str, namespace: str, type: str | None, **_: Any) -> None:
        # A version turning Ready (or Rejected) may unblock (or abort) a promotion that waits for it.
        if type is None:  # the initial listing: resume handlers cover it
            return
        for md in kube.list("ModelDeployment", namespace):
            spec, status = md.get("spec") or {}, md.get("status") or {}
            if name in (spec.get("activeVersion"), spec.get("previewVersion"), status.get("activeVersion")):
                queue.add(("ModelDeployment", namespace, md["metadata"]["name"]))

    @kopf.on.event(GROUP, VERSION, "modeldeployments", registry=registry)
    def deployment_event(namespace: str, status: dict[str, Any], type: str | None, **_: Any) -> None:
        # Keep ModelVersion.status.deployedBy current when traffic moves.
        for version in {status.get("activeVersion"), status.get("previewVersion")} - {None}:
            queue.add(("ModelVersion", namespace, version))
