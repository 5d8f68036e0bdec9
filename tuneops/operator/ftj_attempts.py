"""FineTuneJob attempts (pure): one `status.attempts[]` entry per training pod, level-based and bounded.

An attempt is identified by its pod's name, so re-reconciling never duplicates one. Its reason says why it
ended: Succeeded, Preempted / NodeLost / Evicted (the pod's DisruptionTarget condition), PodDeleted (the pod
vanished without a terminal phase), SpecChanged (a newer revision replaced it), or the container's reason and
exit code (e.g. "OOMKilled (exit code 137)"). `resumedFrom` is the newest complete checkpoint the trainer had
published (progress ConfigMap) before the attempt's pod was created. Only the last MAX_ATTEMPTS entries are
kept; `attemptCount` counts them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .ftj_children import CONTAINER
from .meta import REVISION_LABEL, Event, parse_time, rfc3339

MAX_ATTEMPTS = 20
# DisruptionTarget condition reasons (Kubernetes pod disruption conditions) -> attempt reason.
DISRUPTION_REASONS = {
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
}


@dataclass
class AttemptsUpdate:
    attempts: list[dict[str, Any]]
    count: int
    events: list[Event] = field(default_factory=list)


def _revision(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("labels") or {}).get(REVISION_LABEL, 0))


def _job_revision(job_name: str | None) -> int:
    match = re.search(r"-r(\d+)$", job_name or "")
    return int(match.group(1)) if match else 0


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER and "terminated" in (cs.get("state") or {}):
            return cs["state"]["terminated"]
    return None


def disruption(pod: dict[str, Any]) -> str | None:
    """The attempt reason of a pod the cluster disrupted (None when it was not)."""
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return DISRUPTION_REASONS.get(cond.get("reason") or "", "Preempted")
    return None


def _disrupted_at(pod: dict[str, Any]) -> str | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget":
            return cond.get("lastTransitionTime")
    return None


def pod_outcome(pod: dict[str, Any]) -> tuple[str | None, str | None]:
    """(end time, reason) of a finished pod, (None, None) while it runs."""
    st = pod.get("status", {})
    phase = st.get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None, None
    term = _terminated(pod) or {}
    end = term.get("finishedAt") or pod["metadata"].get("deletionTimestamp") or pod["metadata"]["creationTimestamp"]
    if phase == "Succeeded":
        return end, "Succeeded"
    if reason := disruption(pod):
        return end, reason
    reason = term.get("reason") or st.get("reason") or "Failed"
    code = term.get("exitCode")
    return end, f"{reason} (exit code {code})" if code is not None else reason


def checkpoint_before(start: str, old_checkpoint: str | None, progress: dict[str, Any] | None) -> str | None:
    """The newest checkpoint published before `start`: the progress snapshot if it predates the pod (it may be
    newer than what status recorded), else what status already had (the snapshot is the new attempt's own)."""
    progress = progress or {}
    published, started = parse_time(progress.get("updated")), parse_time(start)
    if progress.get("lastCheckpoint") and published and started and published <= started:
        return progress["lastCheckpoint"]
    return old_checkpoint


def track_attempts(old: dict[str, Any], pods: list[dict[str, Any]], revision: int,
                   progress: dict[str, Any] | None, now: datetime) -> AttemptsUpdate:
    """Attempts after observing `pods` (the primary training pods of every revision, any order)."""
    attempts = [dict(a) for a in old.get("attempts") or []]
    count = max(int(old.get("attemptCount") or 0), len(attempts), max((a["n"] for a in attempts), default=0))
    by_pod = {a["pod"]: a for a in attempts if a.get("pod")}
    by_start = {a.get("start"): a for a in attempts if not a.get("pod")}  # entries written before `pod` existed
    # Pods older than the oldest kept entry belong to attempts already dropped from the list.
    floor = parse_time(attempts[0].get("start")) if attempts and count > len(attempts) else None
    events: list[Event] = []
    seen: set[str] = set()
    for pod in sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])):
        name, start = pod["metadata"]["name"], pod["metadata"]["creationTimestamp"]
        seen.add(name)
        attempt = by_pod.get(name) or by_start.pop(start, None)
        if attempt is None:
            created = parse_time(start)
            if floor and created and created <= floor:
                continue
            count += 1
            attempt = {"n": count, "start": start, "pod": name}
            job = (pod["metadata"].get("labels") or {}).get("job-name")
            if job:
                attempt["job"] = job
            resumed = checkpoint_before(start, old.get("lastCheckpoint"), progress) if count > 1 else None
            if resumed:
                attempt["resumedFrom"] = resumed
            attempts.append(attempt)
            by_pod[name] = attempt
            if count > 1:
                events.append(Event("Normal", "Restarted", f"attempt {count} started"
                                    + (f", resuming from {resumed}" if resumed else ", from scratch")))
        attempt.setdefault("pod", name)
        if "end" in attempt:
            continue
        end, reason = pod_outcome(pod)
        if end is None and _revision(pod) < revision:
            end, reason = rfc3339(now), "SpecChanged"
        elif end is None and (disrupted := disruption(pod)):
            # The condition is set by whoever is about to stop the pod (scheduler, taint manager, eviction).
            end, reason = pod["metadata"].get("deletionTimestamp") or _disrupted_at(pod) or rfc3339(now), disrupted
        elif end is None and (deleted := pod["metadata"].get("deletionTimestamp")):
            end, reason = deleted, "PodDeleted"  # the trainer is being stopped
        if end is not None:
            attempt.update(end=end, reason=reason)
    # A pod that vanished before reaching a terminal phase: deleted (node loss, kubectl delete) or replaced.
    for attempt in attempts:
        if "end" not in attempt and attempt.get("pod") and attempt["pod"] not in seen:
            replaced = 0 < _job_revision(attempt.get("job")) < revision
            attempt.update(end=rfc3339(now), reason="SpecChanged" if replaced else "PodDeleted")
    return AttemptsUpdate(attempts=attempts[-MAX_ATTEMPTS:], count=count, events=events)
