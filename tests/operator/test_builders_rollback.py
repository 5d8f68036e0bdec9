"""Post-promotion checks and automatic rollback (pure planner): one story, step by step, plus edge cases."""

from __future__ import annotations

from datetime import timedelta

from tests.operator.factories import NOW, deployment, modeldeployment, modelversion
from tuneops.operator.md_plan import SlotMetrics, observe_slot, plan_modeldeployment
from tuneops.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(tgi_image="tgi:3")
VERSIONS = {"bot-v1": modelversion("bot-v1", version=1), "bot-v2": modelversion("bot-v2", version=2),
            "bot-v3": modelversion("bot-v3", version=3)}
PROMOTION = {"scaleDownDelaySeconds": 600,
             "postPromotion": {"windowSeconds": 300, "intervalSeconds": 10, "maxErrorRate": 0.05,
                               "maxP95LatencyMs": 2000}}
GIT = {"repoUrl": "file:///srv/git/deploy.git", "branch": "main", "path": "apps/bot.yaml"}


def _slots(blue=None, green=None):
    return {"blue": observe_slot(blue), "green": observe_slot(green)}


def _selector(plan) -> str:
    return plan.services[0]["spec"]["selector"]["tuneops.io/slot"]


def _step(md, slots, now, metrics=None):
    plan = plan_modeldeployment(md, slots, VERSIONS, SETTINGS, now, metrics)
    md["status"] = plan.status
    return plan


def test_failing_checks_roll_back_hold_and_ask_for_a_git_write_back():
    md = modeldeployment(active="bot-v1", promotion=PROMOTION, gitWriteBack=GIT,
                         status={"phase": "Healthy", "activeSlot": "blue", "activeVersion": "bot-v1",
                                 "lastPromotionTime": "2026-11-25T07:00:00Z"})
    both = _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 2))
    # Promote v2: green is ready, the switch starts the watch (previous version v1 stays warm in blue).
    md["spec"]["activeVersion"] = "bot-v2"
    plan = _step(md, both, NOW)
    assert _selector(plan) == "green"
    watch = plan.status["postPromotion"]
    assert (watch["version"], watch["previousVersion"], watch["state"]) == ("bot-v2", "bot-v1", "Watching")
    assert plan.requeue_after == 10

    # Healthy metrics inside the window: keep watching, look again in intervalSeconds.
    plan = _step(md, both, NOW + timedelta(seconds=20), {"green": SlotMetrics(error_rate=0.01, p95_latency_ms=900)})
    assert plan.status["postPromotion"]["state"] == "Watching" and plan.status["postPromotion"]["errorRate"] == 0.01
    assert plan.requeue_after == 10 and plan.write_back is None

    # Errors: roll back at once to the warm blue slot, in the same reconcile.
    later = NOW + timedelta(seconds=40)
    plan = _step(md, both, later, {"green": SlotMetrics(error_rate=0.25, p95_latency_ms=900)})
    st = plan.status
    assert _selector(plan) == "blue"
    assert (st["phase"], st["activeVersion"], st["activeSlot"]) == ("RolledBack", "bot-v1", "blue")
    rb = st["rollback"]
    assert (rb["from"], rb["to"], rb["holding"], rb["writeBack"]) == ("bot-v2", "bot-v1", True, "Pending")
    assert rb["reason"] == "error rate 0.25 > maxErrorRate 0.05"
    assert st["postPromotion"]["state"] == "Failed"
    assert {"PostPromotionCheckFailed", "RolledBack"} <= {e.reason for e in plan.events}
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["RolledBack"]["status"] == "True" and conditions["Promoted"]["reason"] == "RolledBack"
    wb = plan.write_back
    assert (wb.from_version, wb.to_version, wb.git.path) == ("bot-v2", "bot-v1", "apps/bot.yaml")
    assert wb.message.startswith("rollback ml/bot: bot-v2 -> bot-v1\n")
    assert "error rate 0.25 > maxErrorRate 0.05" in wb.message and "error rate: 0.25" in wb.message

    # spec still names v2 (Git not reverted yet): no re-promotion, whatever the metrics say.
    for seconds in (60, 400, 2000):
        plan = _step(md, both, NOW + timedelta(seconds=seconds), {"green": SlotMetrics(error_rate=0.0)})
        assert _selector(plan) == "blue" and plan.status["phase"] == "RolledBack"
        assert "spec.activeVersion still names bot-v2" in plan.status["message"]

    # Git reverted (the write-back commit synced by Argo CD): follow spec again, nothing moves.
    md["spec"]["activeVersion"] = "bot-v1"
    plan = _step(md, both, NOW + timedelta(seconds=2100))
    assert plan.status["phase"] == "Healthy" and _selector(plan) == "blue"
    assert plan.status["rollback"]["holding"] is False and plan.write_back is None

    # Naming v2 again later is a deliberate new promotion: allowed.
    md["spec"]["activeVersion"] = "bot-v2"
    plan = _step(md, both, NOW + timedelta(seconds=2200))
    assert _selector(plan) == "green" and plan.status["postPromotion"]["state"] == "Watching"


def test_checks_pass_when_the_window_ends():
    md = modeldeployment(active="bot-v2", promotion=PROMOTION,
                         status={"phase": "Healthy", "activeSlot": "green", "activeVersion": "bot-v2",
                                 "lastPromotionTime": "2026-11-25T09:00:00Z",
                                 "postPromotion": {"version": "bot-v2", "previousVersion": "bot-v1",
                                                   "since": "2026-11-25T09:00:00Z", "state": "Watching"}})
    both = _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2), green=deployment("bot", "green", "bot-v2", 2, 2))
    plan = _step(md, both, NOW + timedelta(seconds=301), {"green": SlotMetrics(error_rate=0.01)})
    assert plan.status["postPromotion"]["state"] == "Passed" and plan.status["phase"] == "Healthy"
    assert "rollback" not in plan.status
    # Failing metrics after the window no longer roll back.
    plan = _step(md, both, NOW + timedelta(seconds=320), {"green": SlotMetrics(error_rate=0.9)})
    assert _selector(plan) == "green" and "rollback" not in plan.status


def test_latency_failure_with_a_cold_previous_slot_waits_for_it_degraded():
    md = modeldeployment(active="bot-v2", promotion=PROMOTION,
                         status={"phase": "Healthy", "activeSlot": "green", "activeVersion": "bot-v2",
                                 "lastPromotionTime": "2026-11-25T09:00:00Z",
                                 "postPromotion": {"version": "bot-v2", "previousVersion": "bot-v1",
                                                   "since": "2026-11-25T09:00:00Z", "state": "Watching"}})
    cold = _slots(blue=deployment("bot", "blue", "bot-v1", 0, 0), green=deployment("bot", "green", "bot-v2", 2, 2))
    plan = _step(md, cold, NOW + timedelta(seconds=30), {"green": SlotMetrics(p95_latency_ms=4500)})
    st = plan.status
    assert st["phase"] == "Degraded" and _selector(plan) == "green"
    assert st["rollback"]["reason"] == "p95 latency 4500 > maxP95LatencyMs 2000"
    assert "rolling back from bot-v2 to bot-v1" in st["message"]
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in plan.deployments}["bot-blue"] == 2
    assert plan.write_back is None  # nothing to write back before traffic actually moved
    # Blue comes up: switch.
    warm = _slots(blue=deployment("bot", "blue", "bot-v1", 2, 1), green=deployment("bot", "green", "bot-v2", 2, 2))
    plan = _step(md, warm, NOW + timedelta(seconds=45))
    assert _selector(plan) == "blue" and plan.status["phase"] == "RolledBack"
    assert plan.status["rollback"].get("writeBack") is None  # no gitWriteBack configured
    assert "revert spec.activeVersion in Git" in plan.status["message"]


def test_no_previous_version_means_no_rollback():
    md = modeldeployment(active="bot-v1", promotion=PROMOTION)
    plan = _step(md, _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)), NOW)
    assert plan.status["postPromotion"] == {"version": "bot-v1", "since": "2026-11-25T09:00:00Z", "state": "Watching"}
    plan = _step(md, _slots(blue=deployment("bot", "blue", "bot-v1", 2, 2)), NOW + timedelta(seconds=20),
                 {"blue": SlotMetrics(error_rate=0.5)})
    assert _selector(plan) == "blue" and "rollback" not in plan.status
    assert plan.status["postPromotion"]["state"] == "Failed"
    assert "PostPromotionCheckFailed" in {e.reason for e in plan.events}
