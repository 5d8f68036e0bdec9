"""FineTuneJob attempts (pure): reasons, resumedFrom, idempotence, bounds."""

from __future__ import annotations

from datetime import timedelta

from tests.operator.factories import NOW, finetunejob, job, pod
from tests.operator.test_builders_finetunejob import SETTINGS, _digest
from tuneops.operator.ftj_attempts import MAX_ATTEMPTS, track_attempts
from tuneops.operator.ftj_plan import FtjObserved, plan_finetunejob


def _at(minute: int, second: int = 0) -> str:
    return f"2026-11-25T08:{minute:02d}:{second:02d}Z"


def _progress(checkpoint: str, minute: int) -> dict:
    return {"phase": "Running", "step": 10 * minute, "totalSteps": 1000, "lastCheckpoint": checkpoint,
            "updated": _at(minute, 30)}


def _reconcile(ftj, jobs, pods, progress, now=NOW):
    plan = plan_finetunejob(ftj, FtjObserved(jobs=jobs, pods=pods, progress=progress), SETTINGS, now)
    ftj["status"] = plan.status
    return plan


def test_preemption_node_loss_crash_and_spec_change_are_attempts_with_their_checkpoints():
    ftj = finetunejob("sft")
    d1 = _digest(ftj)
    j1 = job(ftj, 1, d1)
    # Attempt 1 runs and publishes checkpoint-100, then is preempted.
    p1 = pod(ftj, 1, _at(1))
    _reconcile(ftj, [j1], [p1], _progress("s3://c/checkpoint-100", 5))
    p1 = pod(ftj, 1, _at(1), "Failed", disrupted=True, exit_code=143)
    p2 = pod(ftj, 1, _at(10))  # the Job controller's replacement; the operator sees both at once
    _reconcile(ftj, [j1], [p1, p2], _progress("s3://c/checkpoint-100", 5))
    # Attempt 2 publishes checkpoint-200; its node is lost (the taint manager's DisruptionTarget, then deletion).
    _reconcile(ftj, [j1], [p1, p2], _progress("s3://c/checkpoint-200", 15))
    p2 = pod(ftj, 1, _at(10))
    p2["metadata"]["deletionTimestamp"] = _at(20)
    p2["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"})
    _reconcile(ftj, [j1], [p1, p2], _progress("s3://c/checkpoint-200", 15))
    # Attempt 3 publishes checkpoint-300, is OOM-killed; attempt 4 starts (the pod of 2 is gone by now).
    p3 = pod(ftj, 1, _at(21))
    _reconcile(ftj, [j1], [p1, p3], _progress("s3://c/checkpoint-300", 25))
    p3 = pod(ftj, 1, _at(21), "Failed", exit_code=137, reason="OOMKilled")
    p4 = pod(ftj, 1, _at(30))
    # A progress snapshot newer than the pod is the new attempt's own: resumedFrom stays what status had.
    _reconcile(ftj, [j1], [p1, p3, p4], {**_progress("s3://c/checkpoint-300", 31), "lastCheckpoint": None})
    _reconcile(ftj, [j1], [p1, p3, p4], _progress("s3://c/checkpoint-400", 35))
    # The user edits the spec: revision 2 replaces attempt 4 and resumes from checkpoint-400.
    ftj["spec"]["training"]["learningRate"] = 1e-4
    ftj["metadata"]["generation"] = 2
    plan = _reconcile(ftj, [j1], [p1, p3, p4], _progress("s3://c/checkpoint-400", 35))
    assert plan.delete_jobs == ["sft-r1"]
    p5 = pod(ftj, 2, _at(40))
    j2 = job(ftj, 2, _digest(ftj))
    plan = _reconcile(ftj, [j2], [p5], _progress("s3://c/checkpoint-400", 35))

    st = plan.status
    got = [(a["n"], a.get("reason"), a.get("resumedFrom"), a.get("job")) for a in st["attempts"]]
    assert got == [
        (1, "Preempted", None, "sft-r1"),
        (2, "NodeLost", "s3://c/checkpoint-100", "sft-r1"),
        (3, "OOMKilled (exit code 137)", "s3://c/checkpoint-200", "sft-r1"),
        (4, "SpecChanged", "s3://c/checkpoint-300", "sft-r1"),
        (5, None, "s3://c/checkpoint-400", "sft-r2"),
    ]
    assert st["attemptCount"] == 5 and st["lastCheckpoint"] == "s3://c/checkpoint-400"
    assert all(a["start"] < a["end"] for a in st["attempts"][:4])
    assert st["attempts"][1]["end"] == _at(20)  # node loss ends at the deletion
    # Level-based: the same observation again changes nothing.
    again = plan_finetunejob(ftj, FtjObserved(jobs=[j2], pods=[p5], progress=_progress("s3://c/checkpoint-400", 35)),
                             SETTINGS, NOW + timedelta(minutes=5))
    assert again.status["attempts"] == st["attempts"] and again.status["attemptCount"] == 5
    assert "Restarted" not in {e.reason for e in again.events}


def test_a_pod_deleted_without_a_terminal_phase_ends_its_attempt():
    ftj = finetunejob("sft")
    j1 = job(ftj, 1, _digest(ftj))
    _reconcile(ftj, [j1], [pod(ftj, 1, _at(1))], None)
    plan = _reconcile(ftj, [j1], [], None)  # gone (kubectl delete pod; kwok removes it at once)
    (attempt,) = plan.status["attempts"]
    assert attempt["reason"] == "PodDeleted" and attempt["end"] == "2026-11-25T09:00:00Z"


def test_attempts_are_bounded_and_dropped_pods_are_not_re_added():
    ftj = finetunejob("sft")
    j1 = job(ftj, 1, _digest(ftj))
    pods = [pod(ftj, 1, _at(m // 60, m % 60), "Failed", disrupted=True) for m in range(25)]
    pods.append(pod(ftj, 1, _at(30)))
    first = track_attempts({}, pods, 1, None, NOW)
    assert len(first.attempts) == MAX_ATTEMPTS and first.count == 26
    assert [a["n"] for a in first.attempts] == list(range(7, 27))
    status = {"attempts": first.attempts, "attemptCount": first.count}
    second = track_attempts(status, pods, 1, None, NOW)
    assert second.attempts == first.attempts and second.count == 26 and second.events == []
    plan = _reconcile(ftj, [j1], pods, None)
    assert plan.status["attemptCount"] == 26 and plan.status["message"] == "running: attempt 26"
