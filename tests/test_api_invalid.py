"""Malformed specs are rejected with a message that names the field (see tests/cases.py)."""

import pytest

from tuneops.api import InvalidResource, parse_resource

from .cases import CASES


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_spec_is_rejected_naming_the_field(case):
    with pytest.raises(InvalidResource) as info:
        parse_resource(case.document())
    paths = [e.path for e in info.value.errors]
    assert case.field in paths, f"expected an error at {case.field}, got {info.value}"
    for err in info.value.errors:
        assert err.message, "every error carries a rule"


def test_messages_state_the_rule():
    by_id = {c.id: c for c in CASES}

    def message(case_id):
        with pytest.raises(InvalidResource) as info:
            parse_resource(by_id[case_id].document())
        return str(info.value)

    assert "spec.lora.r: must be > 0" in message("lora-r-zero")
    assert "spec.method: must be one of" in message("unknown-method")
    assert "method qlora needs quantization" in message("qlora-without-quantization")
    assert "spec.baseModel: is required" in message("no-base-model")
    assert "use valueFrom.secretKeyRef" in message("inline-secret-env")
    assert "credentials must not be embedded" in message("password-in-uri")
    assert "RFC 1123" in message("bad-registered-name")


def test_all_errors_are_reported_not_just_the_first():
    case = next(c for c in CASES if c.id == "lora-r-zero")
    doc = case.document()
    doc["spec"]["training"]["batchSize"] = 0
    doc["spec"]["method"] = "nope"
    with pytest.raises(InvalidResource) as info:
        parse_resource(doc)
    paths = {e.path for e in info.value.errors}
    assert {"spec.lora.r", "spec.training.batchSize", "spec.method"} <= paths
