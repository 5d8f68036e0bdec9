"""Post-promotion checks and automatic rollback of a ModelDeployment (pure).

After a switch, `status.postPromotion` watches the new version for `windowSeconds` (state Watching). If its
live metrics break `spec.promotion.postPromotion` inside the window, the watch fails and `status.rollback`
records {from, to, reason, time, holding}: the planner then promotes `to` (the previous version, usually still
warm in the other slot, so the switch is immediate) and, while spec.activeVersion still names `from`
(`holding`), never promotes `from` again. A Git write-back (spec.gitWriteBack) commits the revert; once spec
names any other version, `holding` ends and the deployment follows spec again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuneops.api import ModelDeploymentSpec

from .meta import parse_time, rfc3339


@dataclass(frozen=True)
class SlotMetrics:
    """Measured on one slot's pods (preview gates, post-promotion checks); None = not measured."""

    error_rate: float | None = None
    p95_latency_ms: float | None = None


@dataclass(frozen=True)
class WatchStep:
    watch: dict[str, Any]
    failure: str | None = None  # set when the checks failed inside the window: roll back
    requeue: float | None = None


def check_failures(spec: ModelDeploymentSpec, metrics: SlotMetrics | None) -> list[str]:
    """Human-readable failed checks with the measured values, e.g. 'error rate 0.25 > maxErrorRate 0.05'."""
    pp = spec.promotion.post_promotion
    if pp is None or metrics is None:
        return []
    checks = [("error rate", "maxErrorRate", pp.max_error_rate, metrics.error_rate),
              ("p95 latency", "maxP95LatencyMs", pp.max_p95_latency_ms, metrics.p95_latency_ms)]
    return [f"{label} {value:g} > {field} {limit:g}" for label, field, limit, value in checks
            if limit is not None and value is not None and value > limit]


def start_watch(spec: ModelDeploymentSpec, version: str, previous: str | None, now: datetime) -> dict[str, Any] | None:
    """The watch a switch to `version` starts (None when no post-promotion checks are configured)."""
    if spec.promotion.post_promotion is None:
        return None
    watch: dict[str, Any] = {"version": version, "since": rfc3339(now), "state": "Watching"}
    if previous:
        watch["previousVersion"] = previous
    return watch


def watch_step(spec: ModelDeploymentSpec, watch: dict[str, Any], metrics: SlotMetrics | None,
               now: datetime) -> WatchStep:
    """Advance a Watching watch of the active version: fail, pass (window over) or look again later."""
    pp = spec.promotion.post_promotion
    watch = dict(watch)
    if pp is None:
        watch.update(state="Passed", message="spec.promotion.postPromotion was removed")
        return WatchStep(watch)
    if metrics is not None:
        for key, value in (("errorRate", metrics.error_rate), ("p95LatencyMs", metrics.p95_latency_ms)):
            if value is not None:
                watch[key] = round(float(value), 6)
    elapsed = (now - (parse_time(watch.get("since")) or now)).total_seconds()
    failures = check_failures(spec, metrics)
    if failures and elapsed <= pp.window_seconds:
        watch.update(state="Failed", message="; ".join(failures))
        return WatchStep(watch, failure=watch["message"])
    if elapsed >= pp.window_seconds:
        measured = "errorRate" in watch or "p95LatencyMs" in watch
        watch.update(state="Passed", message=f"no check failed in {pp.window_seconds}s" if measured
                     else f"no metrics measured in {pp.window_seconds}s")
        return WatchStep(watch)
    watch["message"] = f"watching {watch['version']}: {int(pp.window_seconds - elapsed)}s left"
    return WatchStep(watch, requeue=min(float(pp.interval_seconds), pp.window_seconds - elapsed))


def write_back_text(rollback: dict[str, Any], configured: bool) -> str:
    """Where Git stands on a rollback, for status.message."""
    if not configured:
        return "revert spec.activeVersion in Git"
    state, note = rollback.get("writeBack"), rollback.get("writeBackMessage")
    return {"Committed": f"reverted in Git by commit {str(rollback.get('commit') or '')[:12]}",
            "UpToDate": "Git already names the previous version",
            "Skipped": f"Git left as is ({note})",
            "Failed": f"Git write-back failed, retrying ({note})"}.get(state or "", "the operator commits the revert to Git")
