"""Every example in examples/ is a valid resource, and the models round-trip through their wire form."""

from pathlib import Path

import pytest

from tuneops.api import BY_KIND, InvalidResource, parse_resource
from tuneops.manifests import load_documents

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").rglob("*.yaml"))
TUNEOPS_DOCS = [d for f in EXAMPLES for d in load_documents(f) if str(d.body.get("apiVersion", "")).startswith("tuneops.io/")]


def test_examples_exist_for_every_kind():
    kinds = {d.body["kind"] for d in TUNEOPS_DOCS}
    assert kinds == set(BY_KIND)
    assert (Path(__file__).resolve().parent.parent / "examples" / "smollm2-lora.yaml").exists()


@pytest.mark.parametrize("doc", TUNEOPS_DOCS, ids=lambda d: d.source)
def test_example_is_valid_and_round_trips(doc):
    resource = parse_resource(doc.body)
    again = parse_resource(resource.model_dump(by_alias=True, exclude_none=True, mode="json"))
    assert again == resource


def test_defaults_are_filled():
    doc = next(d for d in TUNEOPS_DOCS if d.body["metadata"]["name"] == "support-triage-smollm2")
    job = parse_resource(doc.body)
    assert job.spec.distribution.strategy == "none"
    assert job.spec.dataset.cleaning.redact_pii is True  # set in YAML as redactPII
    assert job.spec.training.precision == "auto"
    assert job.spec.lora_or_default().r == 8


def test_wire_form_is_camel_case():
    doc = next(d for d in TUNEOPS_DOCS if d.body["kind"] == "FineTuneJob")
    wire = parse_resource(doc.body).spec.to_wire()
    assert "baseModel" in wire and "base_model" not in wire
    assert "maxSeqLength" in wire["training"]


def test_not_a_mapping_and_unknown_kind():
    with pytest.raises(InvalidResource, match="expected a mapping"):
        parse_resource(["a"])
    with pytest.raises(InvalidResource, match="kind: unknown kind 'Job'"):
        parse_resource({"apiVersion": "tuneops.io/v1alpha1", "kind": "Job"})
    with pytest.raises(InvalidResource, match="apiVersion: must be tuneops.io/v1alpha1"):
        parse_resource({"apiVersion": "tuneops.io/v1", "kind": "FineTuneJob"})
