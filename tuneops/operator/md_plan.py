"""ModelDeployment blue/green decision (pure): (resource, observed slots, versions) -> desired children + status.

State lives in status (activeSlot, activeVersion, lastPromotionTime) and in the slot Deployments (their
version annotation), so a reconcile interrupted anywhere recomputes the same plan.

Promotion (spec.activeVersion != status.activeVersion):
  1. version gate: the ModelVersion exists, is Ready, and (gates.evalVerdict=Passed) its eval verdict is Passed.
     Not found / not Ready yet -> wait (Promoting); Rejected or Failed -> Aborted. Traffic stays where it was.
  2. the idle slot gets the version at full size; wait until all its pods are Ready (gates.ready) and the
     optional metric gates pass on the preview; then wait autoPromotionSeconds with all gates green.
  3. switch: the active Service selector moves to the idle slot; the old slot stays warm for
     scaleDownDelaySeconds, then scales to 0. Reverting activeVersion while the old slot is warm switches back
     at once (its pods are already Ready): that is the rollback.
The idle slot otherwise runs spec.previewVersion (previewReplicas) behind <name>-preview. A preview takes the
idle slot even if it held the warm previous version (rollback is then a normal promotion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuneops.api import InvalidResource, ModelDeploymentSpec, parse_spec

from . import md_children as kids
from .gitops_writeback import WriteBack, commit_message
from .md_rollback import SlotMetrics, start_watch, watch_step, write_back_text
from .meta import VERSION_ANNOTATION, Event, condition, parse_time, rfc3339, set_condition
from .settings import OperatorSettings


@dataclass(frozen=True)
class SlotObserved:
    exists: bool = False
    version: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    current: bool = True  # the Deployment controller has seen its latest generation
    adapters: tuple[tuple[str, str], ...] = ()  # strategy=adapters: (version, adapter uri) the fleet loads
    total_replicas: int = 0  # pods of every template (old ones too, during a rollout)


def observe_slot(deployment: dict[str, Any] | None) -> SlotObserved:
    if not deployment:
        return SlotObserved()
    st = deployment.get("status") or {}
    meta = deployment["metadata"]
    return SlotObserved(
        exists=True,
        version=(meta.get("annotations") or {}).get(VERSION_ANNOTATION),
        replicas=int((deployment.get("spec") or {}).get("replicas", 1)),
        ready_replicas=int(st.get("readyReplicas") or 0),
        updated_replicas=int(st.get("updatedReplicas") or 0),
        current=int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
        adapters=_loaded_adapters(meta),
        total_replicas=int(st.get("replicas") or 0),
    )


def _loaded_adapters(meta: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = (meta.get("annotations") or {}).get(kids.ADAPTERS_ANNOTATION)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items())) if isinstance(value, dict) else ()


@dataclass(frozen=True)
class Gate:
    ok: bool
    reason: str
    message: str
    wait: bool = False  # not yet (retry) rather than refused


@dataclass
class MdPlan:
    status: dict[str, Any]
    deployments: list[dict[str, Any]] = field(default_factory=list)
    config_maps: list[dict[str, Any]] = field(default_factory=list)  # applied before the Deployments
    services: list[dict[str, Any]] = field(default_factory=list)
    hpa: dict[str, Any] | None = None
    delete_hpa: bool = False
    pdb: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    write_back: WriteBack | None = None  # commit the reverted activeVersion to Git (the reconciler does the I/O)

# A failed Git write-back is retried this often.
WRITE_BACK_RETRY_SECONDS = 30.0


def other(slot: str) -> str:
    return "green" if slot == "blue" else "blue"


def version_gate(name: str, mv: dict[str, Any] | None, require_passed: bool) -> Gate:
    if mv is None:
        return Gate(False, "VersionNotFound", f"ModelVersion {name} not found", wait=True)
    st = mv.get("status") or {}
    phase = st.get("phase")
    verdict = ((st.get("evaluation") or (mv.get("spec") or {}).get("evaluation")) or {}).get("verdict")
    if phase == "Rejected" or (require_passed and verdict == "Failed"):
        return Gate(False, "VersionRejected", f"ModelVersion {name} was rejected by its eval gate"
                    + (f": {st['message']}" if st.get("message") else ""))
    if phase == "Failed":
        return Gate(False, "VersionFailed", f"ModelVersion {name} failed: {st.get('message') or 'unknown'}")
    if phase != "Ready":
        return Gate(False, "VersionNotReady", f"waiting for ModelVersion {name} to be Ready", wait=True)
    if require_passed and verdict != "Passed":
        return Gate(False, "EvalNotPassed", f"ModelVersion {name} has eval verdict {verdict or 'none'}; "
                    "promotion.gates.evalVerdict is Passed (set it to Any to serve unevaluated versions)")
    return Gate(True, "Passed", f"ModelVersion {name} passed the version gates")


def artifacts(mv: dict[str, Any]) -> kids.VersionArtifacts:
    spec = mv.get("spec") or {}
    source = (spec.get("baseModel") or {}).get("source") or {}
    base = source.get("hf") or source.get("path") or source.get("packaged") or ""
    return kids.VersionArtifacts(name=mv["metadata"]["name"], base_model=base,
                                 adapter_uri=(spec.get("adapter") or {}).get("uri"),
                                 merged_uri=(spec.get("merged") or {}).get("uri"))


def slot_ready(obs: SlotObserved, version: str, want: int) -> bool:
    return (obs.exists and obs.version == version and obs.current
            and obs.updated_replicas >= want and obs.ready_replicas >= want)


def metric_gate(spec: ModelDeploymentSpec, metrics: SlotMetrics | None) -> Gate:
    gates = spec.promotion.gates
    checks = [("error rate", gates.max_error_rate, metrics.error_rate if metrics else None),
              ("p95 latency ms", gates.max_p95_latency_ms, metrics.p95_latency_ms if metrics else None)]
    for label, limit, value in checks:
        if limit is None:
            continue
        if value is None:
            return Gate(False, "WaitingForMetrics", f"waiting for the preview's {label}", wait=True)
        if value > limit:
            return Gate(False, "MetricGateFailed", f"preview {label} {value:g} > {limit:g}")
    return Gate(True, "Passed", "metric gates passed")


def plan_modeldeployment(md: dict[str, Any], slots: dict[str, SlotObserved], versions: dict[str, dict | None],
                         settings: OperatorSettings, now: datetime,
                         metrics: dict[str, SlotMetrics] | None = None) -> MdPlan:
    meta = md["metadata"]
    name, namespace, gen = meta["name"], meta["namespace"], meta.get("generation")
    old: dict[str, Any] = dict(md.get("status") or {})
    conditions = list(old.get("conditions") or [])
    try:
        spec = parse_spec(ModelDeploymentSpec, md.get("spec") or {})
    except InvalidResource as exc:
        conditions = set_condition(conditions, "SpecValid", "False", "Invalid", str(exc), gen, now)
        status = {**{k: v for k, v in old.items() if v is not None}, "phase": "Degraded",
                  "message": f"invalid spec: {exc}", "conditions": conditions, "observedGeneration": gen}
        return MdPlan(status=status, events=_phase_events(old, status))
    conditions = set_condition(conditions, "SpecValid", "True", "Validated", "spec is valid", gen, now)
    if spec.strategy == "adapters":  # one fleet, several adapters (md_adapters); else the two slots below
        from .md_adapters import adapter_sharing, plan_adapter_fleet

        ok, reason, why = adapter_sharing([old.get("activeVersion"), spec.active_version, spec.preview_version],
                                          versions)
        if ok:
            return plan_adapter_fleet(md, spec, slots, versions, settings, now, conditions, old)
        conditions = set_condition(conditions, "AdapterSharing", "False", reason, why, gen, now)

    auto = spec.autoscaling if spec.autoscaling and spec.autoscaling.enabled else None
    active, active_version = old.get("activeSlot"), old.get("activeVersion")
    last_promotion = parse_time(old.get("lastPromotionTime"))
    idle = other(active) if active else "blue"
    if auto:
        current = slots[active].replicas if active else 0
        full = min(max(auto.min_replicas, current), auto.max_replicas)
    else:
        full = spec.replicas
    active_replicas = None if auto else spec.replicas  # None: the HPA owns the active slot's count
    desired: dict[str, tuple[str, int | None]] = {}
    if active and active_version:
        desired[active] = (active_version, active_replicas)

    events: list[Event] = []
    requeue: float | None = None
    phase = message = None

    # Post-promotion watch of the active version; a failure rolls back to the previous version.
    watch = dict(old["postPromotion"]) if old.get("postPromotion") else None
    rollback = dict(old["rollback"]) if old.get("rollback") else None
    if rollback and rollback.get("holding") and spec.active_version != rollback.get("from"):
        rollback["holding"] = False  # spec names another version now (Git reverted, or moved on): follow it
        if rollback.get("writeBack") == "Pending":
            rollback.update(writeBack="Skipped", writeBackMessage=f"spec.activeVersion changed to {spec.active_version}")
        conditions, _ = _set(conditions, "RolledBack", "False", "SpecUpdated",
                             f"spec.activeVersion is {spec.active_version}", gen, now)
    if (watch and watch.get("state") == "Watching" and not (rollback and rollback.get("holding"))
            and watch.get("version") == active_version == spec.active_version):
        step = watch_step(spec, watch, (metrics or {}).get(active) if active else None, now)
        watch = step.watch
        if step.requeue:
            requeue = step.requeue
        if step.failure and watch.get("previousVersion"):
            rollback = {"from": active_version, "to": watch["previousVersion"], "reason": step.failure,
                        "time": rfc3339(now), "holding": True}
            if spec.git_write_back:
                rollback["writeBack"] = "Pending"
            events.append(Event("Warning", "PostPromotionCheckFailed",
                                f"{active_version} failed its post-promotion checks ({step.failure}); "
                                f"rolling back to {rollback['to']}"))
            conditions, _ = _set(conditions, "RolledBack", "True", "PostPromotionCheckFailed",
                                 f"{active_version} -> {rollback['to']}: {step.failure}", gen, now)
        elif step.failure:
            events.append(Event("Warning", "PostPromotionCheckFailed",
                                f"{active_version} failed its post-promotion checks ({step.failure}); "
                                "no previous version to roll back to"))
        if step.failure or watch["state"] == "Passed":
            conditions, _ = _set(conditions, "PostPromotionChecks", "True" if watch["state"] == "Passed" else "False",
                                 "ChecksPassed" if watch["state"] == "Passed" else "ChecksFailed",
                                 f"{watch['version']}: {watch.get('message', '')}", gen, now)
    holding = bool(rollback and rollback.get("holding"))
    rolling_back = holding and rollback["to"] != active_version

    target = rollback["to"] if holding else spec.active_version
    promoting = target != active_version
    idle_taken = False
    if promoting:
        gate = version_gate(target, versions.get(target), spec.promotion.gates.eval_verdict == "Passed")
        if not gate.ok:
            phase = ("Promoting" if active else "Progressing") if gate.wait else "Aborted"
            message = gate.message + (f"; traffic stays on {active_version}" if active else "")
            conditions, changed = _set(conditions, "Promoted", "False", gate.reason, message, gen, now)
            if changed:
                events.append(Event("Normal" if gate.wait else "Warning", gate.reason, message))
        else:
            idle_taken = True
            obs = slots[idle]
            desired[idle] = (target, full)
            marker = f"{target} in slot {idle}"
            previous = condition(conditions, "PromotionGates")
            tracked = previous is not None and previous.get("message", "").startswith(marker)
            ready = slot_ready(obs, target, full)
            # Rolling back: the previous version's warm pods take traffic at once (the slot grows to full
            # behind them); the preview metric gates judged it when it was promoted.
            if rolling_back:
                ready = obs.exists and obs.version == target and obs.ready_replicas > 0
                gates = Gate(True, "Passed", "rollback")
            else:
                gates = metric_gate(spec, (metrics or {}).get(idle))
            if (spec.promotion.gates.ready or rolling_back) and not ready:
                gates = Gate(False, "WaitingForReady", f"{obs.ready_replicas}/{full} pods Ready", wait=True)
            if not gates.ok:
                conditions = set_condition(conditions, "PromotionGates", "False", gates.reason,
                                           f"{marker}: {gates.message}", gen, now)
                if gates.wait:
                    phase, message = ("Promoting" if active else "Progressing"), f"promoting {marker}: {gates.message}"
                else:
                    phase, message = "Aborted", f"promotion of {target} aborted: {gates.message}" + (
                        f"; traffic stays on {active_version}" if active else "")
                    conditions, changed = _set(conditions, "Promoted", "False", gates.reason, message, gen, now)
                    if changed:
                        events.append(Event("Warning", gates.reason, message))
            else:
                conditions = set_condition(conditions, "PromotionGates", "True", "GatesPassed",
                                           f"{marker}: all gates passed", gen, now)
                since = parse_time((condition(conditions, "PromotionGates") or {}).get("lastTransitionTime")) or now
                # A warm slot (rollback) or an empty Service (first version) switches at once.
                soak = spec.promotion.auto_promotion_seconds if tracked and active and not rolling_back else 0
                remaining = soak - (now - since).total_seconds()
                if remaining > 0:
                    phase, message = "Promoting", f"promoting {marker}: gates green, switching in {int(remaining)}s"
                    requeue = remaining
                else:
                    if rolling_back:
                        events.append(Event("Warning", "RolledBack", f"switched {name} back from {active_version} "
                                            f"({active}) to {target} ({idle}): {rollback['reason']}"))
                    else:
                        events.append(Event("Normal", "Promoted", f"switched {name} from "
                                            f"{active_version or 'nothing'} ({active or '-'}) to {target} ({idle})"))
                        watch = start_watch(spec, target, active_version, now)
                        if watch:
                            requeue = min(requeue or 1e9, float(spec.promotion.post_promotion.interval_seconds))
                    previous_slot = active
                    active, active_version, last_promotion = idle, target, now
                    desired[active] = (target, active_replicas)
                    if previous_slot:
                        desired.pop(previous_slot, None)  # the idle-slot rules below keep it warm
                    idle = previous_slot or other(active)
                    idle_taken = False
                    promoting = False
                    if rolling_back:
                        rolling_back = False
                        conditions, _ = _set(conditions, "Promoted", "False", "RolledBack",
                                             f"{rollback['from']} was rolled back to {target} (slot {active})",
                                             gen, now)
                    else:
                        conditions, _ = _set(conditions, "Promoted", "True", "Promoted",
                                             f"{target} is active in slot {active}", gen, now)
                    if auto and not slots[active].exists:
                        desired[active] = (target, full)

    preview_version = None
    if not idle_taken:
        idle_obs = slots[idle]
        preview = spec.preview_version
        if preview and preview != active_version:
            if versions.get(preview) is None:
                conditions = set_condition(conditions, "Preview", "False", "VersionNotFound",
                                           f"ModelVersion {preview} not found", gen, now)
            else:
                desired[idle] = (preview, spec.promotion.preview_replicas)
                preview_version = preview
                conditions = set_condition(conditions, "Preview", "True", "Running",
                                           f"{preview} in slot {idle} behind {kids.preview_service_name(name)}",
                                           gen, now)
        else:
            conditions = [c for c in conditions if c["type"] != "Preview"]
        if idle not in desired and idle_obs.exists and idle_obs.version:
            deadline = (last_promotion + timedelta(seconds=spec.promotion.scale_down_delay_seconds)
                        if last_promotion else None)
            if deadline and now < deadline and idle_obs.replicas > 0:
                desired[idle] = (idle_obs.version, idle_obs.replicas)  # warm for instant rollback
                requeue = min(requeue or 1e9, (deadline - now).total_seconds())
            else:
                desired[idle] = (idle_obs.version, 0)
    elif desired.get(idle):
        preview_version = desired[idle][0]

    # Children.
    plan = MdPlan(status={})
    for slot in kids.SLOTS:
        if slot in desired:
            version_name, replicas = desired[slot]
            mv = versions.get(version_name)
            art = artifacts(mv) if mv else kids.VersionArtifacts(name=version_name, base_model="")
            if replicas is None and not slots[slot].exists:
                replicas = auto.min_replicas if auto else spec.replicas
            plan.deployments.append(kids.slot_deployment(md, spec, slot, art, replicas, settings))
    plan.services = [kids.service(md, spec, name, active, "active"),
                     kids.service(md, spec, kids.preview_service_name(name), idle, "preview")]
    if auto and active:
        plan.hpa = kids.hpa(md, spec, active)
    else:
        plan.delete_hpa = True
    plan.pdb = kids.pdb(md, active)

    # Status.
    act = slots.get(active) if active else None
    want = (act.replicas if act and act.exists else full) if active else full
    ready_n = act.ready_replicas if act and act.version == active_version else 0
    active_ready = bool(active) and ready_n >= want and want > 0
    conditions = set_condition(conditions, "Ready", "True" if active_ready else "False",
                               "AllReplicasReady" if active_ready else "ReplicasNotReady",
                               f"{ready_n}/{want} replicas of {active_version or 'nothing'} ready", gen, now)
    if phase is None:
        if not active:
            phase, message = "Progressing", "waiting for the first version"
        elif active_ready:
            phase, message = "Healthy", f"{active_version} serving from slot {active}"
        elif ready_n == 0 and old.get("phase") in ("Healthy", "Degraded"):
            phase, message = "Degraded", f"no ready replicas of {active_version}"
        else:
            phase, message = "Progressing", f"{ready_n}/{want} replicas of {active_version} ready"
    status: dict[str, Any] = {
        "phase": phase, "message": message, "conditions": conditions, "observedGeneration": gen,
        "slots": {slot: {"version": desired.get(slot, (slots[slot].version, 0))[0] or None,
                         "replicas": slots[slot].replicas if slots[slot].exists else 0,
                         "readyReplicas": slots[slot].ready_replicas} for slot in kids.SLOTS},
        "endpoints": {"active": f"http://{name}.{namespace}.svc",
                      "preview": f"http://{kids.preview_service_name(name)}.{namespace}.svc"},
        "replicas": want if active else 0, "readyReplicas": ready_n, "ready": f"{ready_n}/{want}",
    }
    for slot in kids.SLOTS:
        status["slots"][slot] = {k: v for k, v in status["slots"][slot].items() if v is not None}
    if active:
        status.update(activeSlot=active, activeVersion=active_version)
    if preview_version:
        status["previewVersion"] = preview_version
    if last_promotion:
        status["lastPromotionTime"] = rfc3339(last_promotion)
    if watch:
        status["postPromotion"] = watch
    if rollback:
        status["rollback"] = rollback
        if holding and rolling_back:
            status["phase"] = "Degraded"
            status["message"] = (f"rolling back from {rollback['from']} to {rollback['to']} ({rollback['reason']}): "
                                 f"waiting for {rollback['to']} to be Ready")
        elif holding:
            status["phase"] = "RolledBack"
            how = write_back_text(rollback, spec.git_write_back is not None)
            status["message"] = (f"rolled back from {rollback['from']} to {rollback['to']} ({rollback['reason']}); "
                                 f"spec.activeVersion still names {rollback['from']}: {how}")
            if spec.git_write_back and rollback.get("writeBack") in ("Pending", "Failed"):
                plan.write_back = WriteBack(
                    git=spec.git_write_back, name=name, namespace=namespace, from_version=rollback["from"],
                    to_version=rollback["to"],
                    message=commit_message(name, namespace, rollback["from"], rollback["to"], rollback["reason"],
                                           rollback.get("time"), watch))
                if rollback.get("writeBack") == "Failed":
                    requeue = min(requeue or 1e9, WRITE_BACK_RETRY_SECONDS)
    plan.status = status
    plan.events = events + _phase_events(old, status)
    plan.requeue_after = requeue
    return plan


def _set(conditions: list[dict], type_: str, status: str, reason: str, message: str, gen: int | None,
         now: datetime) -> tuple[list[dict], bool]:
    """set_condition, also saying whether (status, reason) changed: events fire on transitions only."""
    prev = condition(conditions, type_)
    changed = prev is None or (prev.get("status"), prev.get("reason")) != (status, reason)
    return set_condition(conditions, type_, status, reason, message, gen, now), changed


def record_write_back(status: dict[str, Any], state: str, commit: str | None, message: str) -> Event:
    """Record the reconciler's Git write-back outcome in `status` (a copy of the plan's) and say it as an event."""
    rollback = dict(status.get("rollback") or {})
    rollback.update(writeBack=state, writeBackMessage=message)
    if commit:
        rollback["commit"] = commit
    status["rollback"] = rollback
    if status.get("phase") == "RolledBack":  # say where Git stands now
        status["message"] = status["message"].rsplit(": ", 1)[0] + ": " + write_back_text(rollback, True)
    if state == "Failed":
        return Event("Warning", "GitWriteBackFailed", f"Git write-back failed (retrying): {message}")
    return Event("Normal", "GitWriteBack", f"Git write-back {state}: {message}")


def _phase_events(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    if old.get("phase") == new.get("phase"):
        return []
    kind = "Warning" if new["phase"] in ("Aborted", "Degraded", "RolledBack") else "Normal"
    return [Event(kind, new["phase"], new.get("message") or new["phase"])]
