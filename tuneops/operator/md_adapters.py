"""spec.strategy=adapters: adapter-only blue/green (pure), used by `md_plan.plan_modeldeployment`.

When every version in play (status.activeVersion, spec.activeVersion, spec.previewVersion) is a LoRA adapter
of the same base model, ONE fleet (the active slot's Deployment, `blue` at first) loads them all and serves
both Services; clients reach a non-default adapter by name (TGI `adapter_id`, OpenAI `model` = the
ModelVersion name). Promotion = the `<name>-adapters` ConfigMap's default moves to the new version (the builtin
server polls it), once the fleet has it loaded and all pods are Ready: no second fleet, no selector move.

The fleet's pod template depends only on the *set* of loaded adapters, so pods restart only to load a new
adapter; that rollout also drops adapters no longer active or previewed. Until then the previous active stays
loaded, so reverting spec.activeVersion switches back at once.

Anything else (a merged-only version, different base models) falls back to the two-slot plan, with the
condition AdapterSharing=False saying why. Not covered here (slot plan only): metric gates (the fleet's metrics
mix adapters), autoPromotionSeconds soak and post-promotion rollback.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tuneops.api import ModelDeploymentSpec

from . import md_children as kids
from .meta import Event, rfc3339, set_condition
from .settings import OperatorSettings


def adapter_sharing(names: list[str | None], versions: dict[str, dict | None]) -> tuple[bool, str, str]:
    """(ok, reason, message): can one fleet serve every named version that exists?"""
    present = [(n, versions[n]) for n in dict.fromkeys(names) if n and versions.get(n)]
    bases: dict[str, str] = {}
    for name, mv in present:
        spec = mv.get("spec") or {}  # type: ignore[union-attr]
        if not (spec.get("adapter") or {}).get("uri"):
            return False, "MergedOnly", f"{name} has no adapter (merged weights only): serving it in its own slot"
        bases[name] = json.dumps(spec.get("baseModel") or {}, sort_keys=True)
    if len(set(bases.values())) > 1:
        first = next(iter(bases))
        second = next(n for n in bases if bases[n] != bases[first])
        return False, "DifferentBaseModel", (f"{first} and {second} have different base models: serving them in "
                                             "two slots (blue/green)")
    return True, "SharedBaseModel", "all versions are adapters of one base model"


def plan_adapter_fleet(md: dict[str, Any], spec: ModelDeploymentSpec, slots: dict[str, Any],
                       versions: dict[str, dict | None], settings: OperatorSettings, now: datetime,
                       conditions: list[dict], old: dict[str, Any]) -> Any:
    from .md_plan import MdPlan, _phase_events, _set, artifacts, other, version_gate

    meta = md["metadata"]
    name, namespace, gen = meta["name"], meta["namespace"], meta.get("generation")
    active_version = old.get("activeVersion")
    fleet = old.get("activeSlot") or "blue"
    obs = slots[fleet]
    loaded = dict(obs.adapters)  # name -> adapter uri, as the fleet Deployment says
    target = spec.active_version
    events: list[Event] = []
    phase = message = None
    promoted_at: datetime | None = None

    auto = spec.autoscaling if spec.autoscaling and spec.autoscaling.enabled else None
    if auto:
        want = min(max(auto.min_replicas, obs.replicas if obs.exists else 0), auto.max_replicas)
    else:
        want = spec.replicas

    gate = version_gate(target, versions.get(target), spec.promotion.gates.eval_verdict == "Passed")
    need = [active_version] if active_version else []
    if target != active_version and gate.ok:
        need.append(target)
    preview = spec.preview_version
    if preview and preview not in need and versions.get(preview) is not None:
        need.append(preview)
    # Nothing new to load: keep the loaded set as is (no restart). Otherwise load exactly what is needed.
    wanted = list(loaded) if loaded and set(need) <= set(loaded) else need

    def fleet_has(version: str) -> bool:
        # every pod runs the current template (no old pod without the adapter left) and is Ready
        return (obs.exists and version in loaded and obs.current and obs.updated_replicas >= want
                and obs.total_replicas <= obs.updated_replicas and obs.ready_replicas >= want and want > 0)

    if target != active_version:
        if not gate.ok:
            phase = ("Promoting" if active_version else "Progressing") if gate.wait else "Aborted"
            message = gate.message + (f"; the default stays {active_version}" if active_version else "")
            conditions, changed = _set(conditions, "Promoted", "False", gate.reason, message, gen, now)
            if changed:
                events.append(Event("Normal" if gate.wait else "Warning", gate.reason, message))
        elif not fleet_has(target) or not set(wanted) <= set(loaded):
            phase = "Promoting" if active_version else "Progressing"
            message = f"loading adapter {target} into slot {fleet}: {obs.ready_replicas}/{want} pods Ready"
        else:
            events.append(Event("Normal", "Promoted", f"default adapter of {name} (slot {fleet}) switched from "
                                f"{active_version or 'nothing'} to {target}"))
            active_version = target
            conditions, _ = _set(conditions, "Promoted", "True", "Promoted",
                                 f"{target} is the default adapter of slot {fleet}", gen, now)
            promoted_at = now

    plan = MdPlan(status={})
    base = next((artifacts(versions[n]).base_model for n in wanted if versions.get(n)), "")
    arts = []
    for n in wanted:
        mv = versions.get(n)
        arts.append(artifacts(mv) if mv else kids.VersionArtifacts(name=n, base_model=base, adapter_uri=loaded.get(n)))
    default = active_version or target
    if arts:
        replicas = None if auto and obs.exists else (want if auto else spec.replicas)
        plan.deployments.append(kids.fleet_deployment(md, spec, fleet, arts, default, replicas, settings))
        plan.config_maps.append(kids.adapters_configmap(md, default))
    idle = other(fleet)
    if slots[idle].exists and slots[idle].replicas > 0:  # left over from the two-slot strategy
        v = slots[idle].version or ""
        art = artifacts(versions[v]) if versions.get(v) else kids.VersionArtifacts(name=v, base_model="")
        plan.deployments.append(kids.slot_deployment(md, spec, idle, art, 0, settings))
    serving = fleet if active_version else None
    plan.services = [kids.service(md, spec, name, serving, "active"),
                     kids.service(md, spec, kids.preview_service_name(name), serving, "preview")]
    if auto and active_version:
        plan.hpa = kids.hpa(md, spec, fleet)
    else:
        plan.delete_hpa = True
    plan.pdb = kids.pdb(md, serving)

    conditions = set_condition(conditions, "AdapterSharing", "True", "SharedBaseModel",
                               f"one fleet (slot {fleet}) serves {', '.join(wanted) or 'nothing yet'}", gen, now)
    if preview and preview != active_version and preview in loaded:
        conditions = set_condition(conditions, "Preview", "True", "Running",
                                   f"{preview} loaded in slot {fleet} next to {active_version}; select it with "
                                   f"adapter_id / model {preview!r} via {kids.preview_service_name(name)}", gen, now)
    elif preview and versions.get(preview) is None:
        conditions = set_condition(conditions, "Preview", "False", "VersionNotFound",
                                   f"ModelVersion {preview} not found", gen, now)
    elif not preview:
        conditions = [c for c in conditions if c["type"] != "Preview"]
    ready_n = obs.ready_replicas if obs.exists else 0
    active_ready = bool(active_version) and ready_n >= want > 0
    conditions = set_condition(conditions, "Ready", "True" if active_ready else "False",
                               "AllReplicasReady" if active_ready else "ReplicasNotReady",
                               f"{ready_n}/{want} replicas of {active_version or 'nothing'} ready", gen, now)
    if phase is None:
        if not active_version:
            phase, message = "Progressing", "waiting for the first version"
        elif active_ready:
            phase, message = "Healthy", f"{active_version} is the default adapter of slot {fleet}"
        else:
            phase, message = "Progressing", f"{ready_n}/{want} replicas of slot {fleet} ready"
    status: dict[str, Any] = {
        "phase": phase, "message": message, "conditions": conditions, "observedGeneration": gen,
        "slots": {fleet: {"version": default, "replicas": obs.replicas if obs.exists else 0,
                          "readyReplicas": ready_n},
                  idle: {"replicas": slots[idle].replicas if slots[idle].exists else 0,
                         "readyReplicas": slots[idle].ready_replicas}},
        "endpoints": {"active": f"http://{name}.{namespace}.svc",
                      "preview": f"http://{kids.preview_service_name(name)}.{namespace}.svc"},
        "replicas": want if active_version else 0, "readyReplicas": ready_n, "ready": f"{ready_n}/{want}",
    }
    if active_version:
        status.update(activeSlot=fleet, activeVersion=active_version)
    if preview and preview != active_version and preview in loaded:
        status["previewVersion"] = preview
    if promoted_at is not None:
        status["lastPromotionTime"] = rfc3339(promoted_at)
    elif old.get("lastPromotionTime"):
        status["lastPromotionTime"] = old["lastPromotionTime"]
    plan.status = status
    plan.events = events + _phase_events(old, status)
    return plan
