"""Names, labels, owner references and conditions shared by every builder (pure functions, no API calls)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kopf

from tuneops.api import API_VERSION, GROUP
from tuneops.api.base import ResourcesSpec

MANAGED_BY = "tuneops-operator"
PART_OF = "tuneops"
LABEL_PREFIX = f"{GROUP}/"  # tuneops.io/
FTJ_LABEL = f"{GROUP}/finetunejob"
MD_LABEL = f"{GROUP}/modeldeployment"
MODEL_LABEL = f"{GROUP}/model"
JOB_LABEL = f"{GROUP}/job"
REVISION_LABEL = f"{GROUP}/revision"
SLOT_LABEL = f"{GROUP}/slot"
VERSION_LABEL = f"{GROUP}/version"
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
VERSION_ANNOTATION = f"{GROUP}/version"
JOB_UID_ANNOTATION = f"{GROUP}/job-uid"

MAX_NAME = 63  # DNS-1035 label: Services, Job names (pod hostnames) and label values all need <= 63


def child_name(parent: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`<parent>-<suffix>`, shortened with a stable hash when too long, so retries always compute the same name."""
    name = f"{parent}-{suffix}" if suffix else parent
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{parent[:keep].rstrip('-.')}-{digest}-{suffix}" if suffix else f"{parent[:limit - 9]}-{digest}"


def label_value(value: str) -> str:
    """A label value (<= 63 chars); long values keep a readable prefix and a hash."""
    if len(value) <= MAX_NAME:
        return value
    return child_name(value, "", MAX_NAME)


def common_labels(kind_label: str, instance: str, component: str, name: str = "tuneops") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": label_value(instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        kind_label: label_value(instance),
    }


def owned(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """Set the controller ownerReference (kopf's own helper), so Kubernetes GC deletes children with the owner."""
    kopf.append_owner_reference(obj, owner=owner)
    return obj


def spec_hash(spec: dict[str, Any]) -> str:
    """Digest of a spec in wire form; a changed hash means the user changed something that matters."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """Return conditions with `type_` set; lastTransitionTime changes only when the status flips (k8s semantics)."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != status
    condition = {
        "type": type_, "status": status, "reason": reason, "message": message[:32768],
        "lastTransitionTime": rfc3339(now) if changed else previous.get("lastTransitionTime", rfc3339(now)),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    out.append(condition)
    return sorted(out, key=lambda c: c["type"])


def condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on a transition (the handler posts it; builders only decide)."""

    type: str  # Normal | Warning
    reason: str
    message: str


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` status into `new`: removed keys become null. None when nothing changed."""
    old = {k: v for k, v in (old or {}).items() if v is not None}
    if old == new:
        return None
    patch: dict[str, Any] = dict(new)
    for key, value in old.items():
        if key not in new:
            patch[key] = None
        elif isinstance(value, dict) and isinstance(new[key], dict):
            # Merge patches merge nested objects too: keys dropped inside them must be nulled as well.
            patch[key] = status_patch(value, new[key]) or {}
    return patch


def ref(api_version: str, kind: str, name: str) -> dict[str, str]:
    return {"apiVersion": api_version, "kind": kind, "name": name}


CR_API_VERSION = API_VERSION


def container_resources(res: ResourcesSpec) -> dict[str, Any]:
    """requests/limits for a pod's main container. Memory and GPUs are also limits: a pod that exceeds its
    memory request must not starve its neighbours, and extended resources need request == limit."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if res.gpu.count:
        requests[res.gpu.resource_name] = limits[res.gpu.resource_name] = str(res.gpu.count)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def schedule(pod_spec: dict[str, Any], res: ResourcesSpec) -> dict[str, Any]:
    """Where a pod may run: node selector (plus the GPU product label), tolerations, priority class."""
    node_selector = dict(res.node_selector)
    if res.gpu.product:
        node_selector["nvidia.com/gpu.product"] = res.gpu.product
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if res.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in res.tolerations]
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    return pod_spec
