"""ModelVersion: status transitions and the version picker, table-driven."""

from __future__ import annotations

import pytest

from tests.operator.factories import NOW, modelversion
from tuneops.operator.mv import local_artifact_check, model_version_status, pick_version


def _exists(uri: str) -> bool:
    return "missing" not in uri


@pytest.mark.parametrize("name, verdict, check, adapter, phase, ready_reason, artifact", [
    ("passed", "Passed", _exists, "s3://b/adapter", "Ready", "Ready", "True"),
    ("no eval", None, _exists, "s3://b/adapter", "Ready", "Ready", "True"),
    ("skipped eval", "Skipped", _exists, "s3://b/adapter", "Ready", "Ready", "True"),
    ("gate failed", "Failed", _exists, "s3://b/adapter", "Rejected", "EvalGateFailed", "True"),
    ("artifact missing", "Passed", _exists, "s3://b/missing", "Failed", "ArtifactMissing", "False"),
    ("not verifiable", "Passed", None, "s3://b/adapter", "Ready", "Ready", "Unknown"),
])
def test_status(name, verdict, check, adapter, phase, ready_reason, artifact):
    mv = modelversion("bot-v1", verdict=verdict, phase=None, adapter=adapter)
    status, events = model_version_status(mv, check, ["bot"], NOW)
    cond = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == phase
    assert cond["Ready"]["reason"] == ready_reason
    assert cond["Ready"]["status"] == ("True" if phase == "Ready" else "False")
    assert cond["ArtifactVerified"]["status"] == artifact
    assert status["observedGeneration"] == 1 and status["deployedBy"] == ["bot"]
    assert [e.reason for e in events] == [phase]
    if verdict:
        assert status["evaluation"]["verdict"] == verdict
    if phase == "Rejected":
        assert "rougeL 0.2 < min 0.3" in status["message"]
        assert events[0].type == "Warning"
    # Stable: re-evaluating the stored status emits nothing new.
    mv["status"] = status
    again, events2 = model_version_status(mv, check, ["bot"], NOW.replace(hour=11))
    assert again == status and events2 == []


def test_invalid_spec_fails_with_field():
    mv = modelversion("bot-v1")
    del mv["spec"]["adapter"]
    status, _ = model_version_status(mv, None, [], NOW)
    assert status["phase"] == "Failed"
    assert "needs adapter or merged" in status["message"]


def test_local_artifact_check(tmp_path):
    (tmp_path / "adapter").mkdir()
    assert local_artifact_check(f"file://{tmp_path}/adapter") is True
    assert local_artifact_check(str(tmp_path / "nope")) is False
    assert local_artifact_check("s3://bucket/x") is None


def test_pick_version():
    versions = [modelversion("m-v1", version=1), modelversion("m-v3", version=3)]
    assert pick_version([], "uid-a") == (None, 1)
    assert pick_version(versions, "uid-a") == (None, 4)
    versions.append(modelversion("m-v4", version=4, annotations={"tuneops.io/job-uid": "uid-a"}))
    assert pick_version(versions, "uid-a") == ("m-v4", 4)
