"""ModelDeployment blue/green: one-step transitions (table) and whole promotion/rollback stories."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from tests.operator.factories import NOW, deployment, modeldeployment, modelversion
from tuneops.operator.md_plan import SlotMetrics, SlotObserved, observe_slot, plan_modeldeployment
from tuneops.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(tgi_image="tgi:3")
VERSIONS = {
    "bot-v1": modelversion("bot-v1", version=1),
    "bot-v2": modelversion("bot-v2", version=2, merged="/models/bot/2/merged"),
    "bot-bad": modelversion("bot-bad", verdict="Failed", phase="Rejected", version=3),
    "bot-pending": modelversion("bot-pending", phase="Pending", version=4),
    "bot-noeval": modelversion("bot-noeval", verdict=None, version=5),
}
HEALTHY_BLUE_V1 = {"phase": "Healthy", "activeSlot": "blue", "activeVersion": "bot-v1",
                   "lastPromotionTime": "2026-11-25T07:00:00Z"}


def _slots(blue=None, green=None) -> dict[str, SlotObserved]:
    return {"blue": observe_slot(blue), "green": observe_slot(green)}


def _plan(md, slots, now=NOW, metrics=None):
    return plan_modeldeployment(md, slots, VERSIONS, SETTINGS, now, metrics)


def _selectors(plan) -> tuple[str, str]:
    active, preview = plan.services
    return active["spec"]["selector"]["tuneops.io/slot"], preview["spec"]["selector"]["tuneops.io/slot"]


def _deps(plan) -> dict[str, tuple[str, int | None]]:
    return {d["metadata"]["name"].rsplit("-", 1)[1]: (d["metadata"]["annotations"]["tuneops.io/version"],
                                                      d["spec"].get("replicas")) for d in plan.deployments}


CASES = {
    "first version starts in blue, no traffic yet": dict(
        md=dict(active="bot-v1"), slots=_slots(),
        phase="Progressing", selectors=("none", "blue"), deps={"blue": ("bot-v1", 2)}),
    "first version ready: switch": dict(
        md=dict(active="bot-v1"), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Healthy", selectors=("blue", "green"), deps={"blue": ("bot-v1", 2)}, events=["Promoted", "Healthy"]),
    "steady": dict(
        md=dict(active="bot-v1", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Healthy", selectors=("blue", "green"), deps={"blue": ("bot-v1", 2)}, events=[]),
    "promotion: idle slot gets the new version, traffic stays": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Promoting", selectors=("blue", "green"), deps={"blue": ("bot-v1", 2), "green": ("bot-v2", 2)}),
    "promotion: half ready is not ready": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 1)),
        phase="Promoting", selectors=("blue", "green"), message="1/2 pods Ready"),
    "promotion: stale generation is not ready": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2),
                     green=deployment("bot", "green", "bot-v2", 2, 2, generation=3, observed=2)),
        phase="Promoting", selectors=("blue", "green")),
    "promotion: ready -> switch, old slot kept warm": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 2)),
        phase="Healthy", selectors=("green", "blue"), deps={"blue": ("bot-v1", 2), "green": ("bot-v2", 2)},
        events=["Promoted"], requeue=600),
    "rejected version refused": dict(
        md=dict(active="bot-bad", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Aborted", selectors=("blue", "green"), deps={"blue": ("bot-v1", 2)}, message="rejected",
        events=["VersionRejected", "Aborted"]),
    "unevaluated version refused when the gate wants Passed": dict(
        md=dict(active="bot-noeval", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Aborted", selectors=("blue", "green"), message="evalVerdict is Passed"),
    "unevaluated version allowed with evalVerdict Any": dict(
        md=dict(active="bot-noeval", status=HEALTHY_BLUE_V1, promotion={"gates": {"evalVerdict": "Any"}}),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Promoting", deps={"blue": ("bot-v1", 2), "green": ("bot-noeval", 2)}),
    "missing version waits": dict(
        md=dict(active="bot-v9", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Promoting", selectors=("blue", "green"), message="not found"),
    "pending version waits": dict(
        md=dict(active="bot-pending", status=HEALTHY_BLUE_V1), slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Promoting", message="to be Ready"),
    "rejected first version: nothing serves": dict(
        md=dict(active="bot-bad"), slots=_slots(),
        phase="Aborted", selectors=("none", "blue"), deps={}),
    "preview runs in the idle slot": dict(
        md=dict(active="bot-v1", preview="bot-v2", status=HEALTHY_BLUE_V1),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)),
        phase="Healthy", selectors=("blue", "green"), deps={"blue": ("bot-v1", 2), "green": ("bot-v2", 1)},
        preview="bot-v2"),
    "idle slot scales to zero after the delay": dict(
        md=dict(active="bot-v1", status=HEALTHY_BLUE_V1),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v0", 2, 2)),
        phase="Healthy", deps={"blue": ("bot-v1", 2), "green": ("bot-v0", 0)}),
    "metric gate failing aborts": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1, promotion={"gates": {"maxErrorRate": 0.01}}),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 2)),
        metrics={"green": SlotMetrics(error_rate=0.2)},
        phase="Aborted", selectors=("blue", "green"), message="error rate 0.2 > 0.01"),
    "metric gate waits for metrics": dict(
        md=dict(active="bot-v2", status=HEALTHY_BLUE_V1, promotion={"gates": {"maxP95LatencyMs": 500}}),
        slots=_slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 2)),
        phase="Promoting", selectors=("blue", "green"), message="waiting for the preview's p95"),
}


@pytest.mark.parametrize("name", CASES)
def test_transitions(name):
    case = CASES[name]
    md = modeldeployment(**case["md"])
    plan = _plan(md, case["slots"], metrics=case.get("metrics"))
    st = plan.status
    assert st["phase"] == case["phase"], st["message"]
    if "selectors" in case:
        assert _selectors(plan) == case["selectors"]
    if "deps" in case:
        assert _deps(plan) == case["deps"]
    if "events" in case:
        assert [e.reason for e in plan.events] == case["events"]
    if "message" in case:
        assert case["message"] in st["message"]
    if "requeue" in case:
        assert plan.requeue_after == pytest.approx(case["requeue"])
    if "preview" in case:
        assert st["previewVersion"] == case["preview"]
    assert st["observedGeneration"] == 1
    # Never: traffic on a slot that does not run the active version.
    if st.get("activeSlot"):
        assert _selectors(plan)[0] == st["activeSlot"]
        assert _deps(plan)[st["activeSlot"]][0] == st["activeVersion"]


def test_deployment_manifest_tgi_adapter_and_probes():
    plan = _plan(modeldeployment(active="bot-v1", resources={"gpu": {"count": 1}, "memory": "32Gi"}), _slots())
    (dep,) = plan.deployments
    assert dep["metadata"]["name"] == "bot-blue"
    assert dep["spec"]["selector"]["matchLabels"] == {"tuneops.io/modeldeployment": "bot", "tuneops.io/slot": "blue"}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["tuneops.io/slot"] == "blue"
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "tgi:3"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MODEL_ID"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert env["LORA_ADAPTERS"] == "bot-v1=s3://b/m/adapter"
    assert env["PORT"] == "8080"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["resources"] == {"requests": {"memory": "32Gi", "nvidia.com/gpu": "1"},
                              "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"}}
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert plan.pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {
        "tuneops.io/modeldeployment": "bot", "tuneops.io/slot": "none"}}}
    assert plan.delete_hpa and plan.hpa is None


def test_scheduling_and_service_account():
    resources = {"gpu": {"count": 1, "product": "NVIDIA-A10G"}, "nodeSelector": {"pool": "serve"},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                 "priorityClassName": "serving", "serviceAccountName": "tuneops-serving"}
    (dep,) = _plan(modeldeployment(active="bot-v1", resources=resources), _slots()).deployments
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "serve", "nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "serving" and pod["serviceAccountName"] == "tuneops-serving"
    (dep,) = _plan(modeldeployment(active="bot-v1"), _slots()).deployments
    assert not {"nodeSelector", "tolerations", "priorityClassName", "serviceAccountName"} & set(dep["spec"]["template"]["spec"])


def test_merged_weights_and_builtin_engine():
    md = modeldeployment(active="bot-v2", engine={"kind": "builtin", "port": 9000})
    (dep,) = _plan(md, _slots()).deployments
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"][:4] == ["tuneops", "serve", "--version", "/models/bot/2"]
    assert c["ports"] == [{"name": "http", "containerPort": 9000}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    md = modeldeployment(active="bot-v2", engine={"kind": "tgi", "env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]})
    (dep,) = _plan(md, _slots()).deployments
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_ID"] == "/models/bot/2/merged" and "LORA_ADAPTERS" not in env
    assert env["HF_HUB_OFFLINE"] == "0"  # the spec's env wins


def test_autoscaling_hpa_follows_the_active_slot():
    auto = {"minReplicas": 2, "maxReplicas": 8, "metric": {"type": "cpu", "target": 70}}
    md = modeldeployment(active="bot-v2", status=HEALTHY_BLUE_V1, autoscaling=auto)
    slots = _slots(blue=deployment("bot", "blue", "bot-v1", 5, 5))
    plan = _plan(md, slots)
    deps = _deps(plan)
    assert deps["blue"] == ("bot-v1", None)  # HPA owns the active count
    assert deps["green"] == ("bot-v2", 5)  # the new slot starts at the current size
    assert plan.hpa["spec"]["scaleTargetRef"]["name"] == "bot-blue"
    assert plan.hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    slots = _slots(blue=deployment("bot", "blue", "bot-v1", 5, 5), green=deployment("bot", "green", "bot-v2", 5, 5))
    plan = _plan(md, slots)
    assert plan.status["activeSlot"] == "green"
    assert plan.hpa["spec"]["scaleTargetRef"]["name"] == "bot-green"
    assert _deps(plan) == {"green": ("bot-v2", None), "blue": ("bot-v1", 5)}
    md["spec"]["autoscaling"]["metric"] = {"type": "concurrency", "target": 8}
    assert _plan(md, slots).hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "tuneops_requests_in_flight"
    md["spec"]["autoscaling"]["metric"] = {"type": "requestsPerSecond", "target": 20}
    assert _plan(md, slots).hpa["spec"]["metrics"][0]["pods"] == {
        "metric": {"name": "tuneops_http_requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "20.0"}}


def test_hpa_pod_metrics_derive_from_what_the_builtin_server_exports():
    """The in-flight gauge is served as is; requests/s is the adapter's rate() of the `_total` counter."""
    from tuneops.operator.md_children import POD_METRICS
    from tuneops.runtime.serve.metrics import ServeMetrics

    metrics = ServeMetrics()
    metrics.http_requests.labels(route="/generate", code="200").inc()
    exported = {line.split("{")[0].split(" ")[0] for line in metrics.render().decode().splitlines()
                if line and not line.startswith("#")}
    assert POD_METRICS["concurrency"] in exported
    per_second = POD_METRICS["requestsPerSecond"]
    assert per_second.endswith("_per_second") and per_second.removesuffix("_per_second") + "_total" in exported


class World:
    """Applies plans the way Kubernetes would: Deployments become Ready a step after they are changed."""

    def __init__(self, md: dict):
        self.md = md
        self.deployments: dict[str, dict] = {}
        self.now = NOW
        self.history: list[tuple[str, str]] = []

    def step(self, ready: bool = True, advance: float = 1.0):
        self.now += timedelta(seconds=advance)
        slots = _slots(self.deployments.get("blue"), self.deployments.get("green"))
        plan = _plan(self.md, slots, now=self.now)
        for dep in plan.deployments:
            slot = dep["metadata"]["name"].rsplit("-", 1)[1]
            version = dep["metadata"]["annotations"]["tuneops.io/version"]
            replicas = dep["spec"].get("replicas")
            if replicas is None:
                replicas = self.deployments[slot]["spec"]["replicas"]
            old = self.deployments.get(slot)
            same = old is not None and old["metadata"]["annotations"]["tuneops.io/version"] == version \
                and old["spec"]["replicas"] == replicas
            n_ready = replicas if (ready and same) or (same and old["status"]["readyReplicas"] == replicas) else 0
            self.deployments[slot] = deployment("bot", slot, version, replicas, n_ready)
        self.md["status"] = plan.status
        active = plan.services[0]["spec"]["selector"]["tuneops.io/slot"]
        if active != "none":
            # The invariant: the active Service only ever selects a Ready slot running an allowed version.
            dep = self.deployments[active]
            assert dep["status"]["readyReplicas"] >= 1, "traffic switched to an unready slot"
            assert VERSIONS[dep["metadata"]["annotations"]["tuneops.io/version"]]["status"]["phase"] == "Ready"
        self.history.append((plan.status["phase"], active))
        return plan


def test_story_promote_rollback_reject_scale_down():
    world = World(modeldeployment(active="bot-v1"))
    for _ in range(3):
        world.step()
    assert world.md["status"]["activeVersion"] == "bot-v1" and world.history[-1] == ("Healthy", "blue")

    world.md["spec"]["activeVersion"] = "bot-v2"  # GitOps promotion
    plan = world.step()
    assert _selectors(plan) == ("blue", "green")
    for _ in range(2):
        plan = world.step()
    assert world.md["status"]["activeVersion"] == "bot-v2" and _selectors(plan) == ("green", "blue")
    assert world.deployments["blue"]["spec"]["replicas"] == 2  # warm

    world.md["spec"]["activeVersion"] = "bot-v1"  # rollback inside the delay: instant
    plan = world.step(ready=False)
    assert world.md["status"]["activeVersion"] == "bot-v1" and _selectors(plan) == ("blue", "green")

    world.md["spec"]["activeVersion"] = "bot-bad"
    plan = world.step()
    assert plan.status["phase"] == "Aborted" and _selectors(plan) == ("blue", "green")
    assert "bot-bad" not in [d["metadata"]["annotations"]["tuneops.io/version"] for d in world.deployments.values()]

    world.md["spec"]["activeVersion"] = "bot-v1"  # revert the bad commit
    plan = world.step(advance=601)
    assert plan.status["phase"] == "Healthy"
    assert world.deployments["green"]["spec"]["replicas"] == 0  # delay over: old slot scaled to zero


def test_story_soak_time_before_switch():
    world = World(modeldeployment(active="bot-v1", promotion={"autoPromotionSeconds": 60}))
    for _ in range(3):
        world.step()
    assert world.history[-1] == ("Healthy", "blue")  # nothing served yet: the first version does not soak
    world.md["spec"]["activeVersion"] = "bot-v2"
    world.step()  # green created
    world.step()  # green's pods become Ready
    plan = world.step()  # gates green: wait 60 s
    assert plan.status["phase"] == "Promoting" and _selectors(plan)[0] == "blue"
    assert plan.requeue_after == pytest.approx(60, abs=1.5)
    plan = world.step(advance=61)
    assert plan.status["activeVersion"] == "bot-v2" and _selectors(plan)[0] == "green"


def test_invalid_spec_touches_nothing():
    md = modeldeployment(active="bot-v1", preview="bot-v1")
    plan = _plan(md, _slots())
    assert plan.status["phase"] == "Degraded" and "previewVersion must differ" in plan.status["message"]
    assert plan.deployments == [] and plan.services == []


def test_plan_is_idempotent():
    md = modeldeployment(active="bot-v2", status=HEALTHY_BLUE_V1)
    slots = _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2))
    first = _plan(md, slots)
    md2 = copy.deepcopy(md)
    md2["status"] = first.status
    second = _plan(md2, slots, now=NOW + timedelta(seconds=30))
    assert second.status == first.status and second.deployments == first.deployments
    assert [e.reason for e in second.events] == []


# ---- spec.strategy=adapters: one fleet serves several adapters of one base (adapter-only blue/green) -------

def _adapter_versions() -> dict:
    out = {f"bot-v{n}": modelversion(f"bot-v{n}", version=n, adapter=f"/models/bot/{n}/adapter") for n in (1, 2, 3)}
    other = modelversion("bot-other", version=4, adapter="/models/bot/4/adapter")
    other["spec"]["baseModel"] = {"family": "qwen2", "source": {"hf": "Qwen/Qwen2.5-7B-Instruct"}}
    out["bot-other"] = other
    out["bot-merged"] = modelversion("bot-merged", version=5, adapter="", merged="/models/bot/5/merged")
    del out["bot-merged"]["spec"]["adapter"]
    return out


ADAPTER_VERSIONS = _adapter_versions()


def _running(dep: dict, ready: int | None = None) -> dict:
    """What the API server reports for an applied Deployment once its rollout finished."""
    dep = copy.deepcopy(dep)
    n = dep["spec"].get("replicas", 2)
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                     "readyReplicas": n if ready is None else ready}
    return dep


def _fleet_step(md, slots, now=NOW, engine="builtin"):
    md["spec"].setdefault("strategy", "adapters")
    md["spec"]["engine"] = {"kind": engine, "port": 8080}
    plan = plan_modeldeployment(md, slots, ADAPTER_VERSIONS, SETTINGS, now)
    md["status"] = plan.status
    return plan


def _default_adapter(plan) -> str:
    import json

    (cm,) = plan.config_maps
    return json.loads(cm["data"]["adapters.json"])["default"]


def test_adapters_one_fleet_previews_and_promotes_by_switching_the_default_adapter():
    md = modeldeployment(active="bot-v1")
    plan = _fleet_step(md, _slots())
    (fleet,) = plan.deployments
    assert fleet["metadata"]["name"] == "bot-blue" and _default_adapter(plan) == "bot-v1"
    assert _selectors(plan) == ("none", "none")  # nothing Ready yet
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["AdapterSharing"]["status"] == "True"

    plan = _fleet_step(md, _slots(blue=_running(fleet)))  # Ready: bot-v1 becomes the default adapter
    assert plan.status["phase"] == "Healthy" and plan.status["activeVersion"] == "bot-v1"
    assert _selectors(plan) == ("blue", "blue")

    # A preview loads bot-v2 into the same pods (one rollout), not into a second fleet.
    md["spec"]["previewVersion"] = "bot-v2"
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    (fleet,) = plan.deployments
    command = fleet["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:6] == ["tuneops", "serve", "--version", "/models/bot/1", "--adapter-name", "bot-v1"]
    assert ["--adapter", "bot-v2=/models/bot/2"] == command[6:8]
    assert "--adapters-file" in command and _default_adapter(plan) == "bot-v1"
    mounts = fleet["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "adapters", "mountPath": "/etc/tuneops/adapters", "readOnly": True} in mounts
    assert {"name": "adapters", "configMap": {"name": "bot-adapters"}} in fleet["spec"]["template"]["spec"]["volumes"]
    assert not any(d["metadata"]["name"] == "bot-green" for d in plan.deployments)  # no second fleet
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    assert plan.status["previewVersion"] == "bot-v2" and _selectors(plan) == ("blue", "blue")
    template = copy.deepcopy(plan.deployments[0]["spec"]["template"])

    # Promote: the fleet already has bot-v2 and is Ready -> the default moves at once; pods do not restart.
    md["spec"]["activeVersion"], md["spec"]["previewVersion"] = "bot-v2", None
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    assert plan.status["activeVersion"] == "bot-v2" and _default_adapter(plan) == "bot-v2"
    assert plan.deployments[0]["spec"]["template"] == template
    assert "Promoted" in {e.reason for e in plan.events} and plan.status["lastPromotionTime"]
    fleet = plan.deployments[0]

    # Rollback (revert in Git): bot-v1 is still loaded -> instant, still no restart.
    md["spec"]["activeVersion"] = "bot-v1"
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    assert plan.status["activeVersion"] == "bot-v1" and _default_adapter(plan) == "bot-v1"
    assert plan.deployments[0]["spec"]["template"] == template

    # A version not loaded yet: one rollout loads it (and drops bot-v2, neither active nor previewed);
    # the default stays bot-v1 until every pod runs the new set and is Ready.
    md["spec"]["activeVersion"] = "bot-v3"
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    assert plan.status["phase"] == "Promoting" and _default_adapter(plan) == "bot-v1"
    fleet = plan.deployments[0]
    assert "bot-v3=/models/bot/3" in " ".join(fleet["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "bot-v2" not in fleet["metadata"]["annotations"]["tuneops.io/adapters"]
    rolling = _running(fleet)
    rolling["status"]["replicas"] = 3  # an old pod (without bot-v3) still running
    plan = _fleet_step(md, _slots(blue=rolling))
    assert plan.status["activeVersion"] == "bot-v1"
    plan = _fleet_step(md, _slots(blue=_running(fleet)))
    assert plan.status["activeVersion"] == "bot-v3" and _default_adapter(plan) == "bot-v3"


def test_adapters_tgi_gets_lora_adapters_on_the_base_model():
    md = modeldeployment(active="bot-v1", preview="bot-v2", status=HEALTHY_BLUE_V1)
    plan = _fleet_step(md, _slots(), engine="tgi")
    env = {e["name"]: e.get("value") for e in plan.deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_ID"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert env["LORA_ADAPTERS"] == "bot-v1=/models/bot/1/adapter,bot-v2=/models/bot/2/adapter"


@pytest.mark.parametrize(("preview", "reason"), [("bot-other", "DifferentBaseModel"), ("bot-merged", "MergedOnly")])
def test_adapters_fall_back_to_two_slots_with_a_condition_saying_why(preview, reason):
    md = modeldeployment(active="bot-v1", preview=preview, status=HEALTHY_BLUE_V1)
    plan = _fleet_step(md, _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)))
    sharing = {c["type"]: c for c in plan.status["conditions"]}["AdapterSharing"]
    assert (sharing["status"], sharing["reason"]) == ("False", reason) and preview in sharing["message"]
    assert _deps(plan)["green"][0] == preview and plan.config_maps == []  # the preview got its own slot
    assert _selectors(plan) == ("blue", "green")


def test_adapters_strategy_is_validated_with_a_clear_message():
    md = modeldeployment(active="bot-v1", strategy="shared")
    plan = plan_modeldeployment(md, _slots(), ADAPTER_VERSIONS, SETTINGS, NOW)
    assert plan.status["phase"] == "Degraded" and "strategy" in plan.status["message"]
