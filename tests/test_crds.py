"""The generated CRDs are current, structural apiextensions.k8s.io/v1 objects with the promised UX.

Structure is checked here without a cluster; tests/kube applies them to a real kube-apiserver.
"""

from pathlib import Path

import pytest
import yaml

from tuneops.api import KINDS
from tuneops.manifests import CRD_DIR, GENERATED_HEADER, rendered_crds, stale_crds, write_crds

ROOT = Path(__file__).resolve().parent.parent


def committed() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / CRD_DIR).glob("*.yaml"))}


def test_committed_crds_are_current():
    assert stale_crds(ROOT / CRD_DIR) == []


def test_check_detects_edits_and_strays(tmp_path):
    write_crds(tmp_path)
    assert stale_crds(tmp_path) == []
    target = tmp_path / "tuneops.io_finetunejobs.yaml"
    target.write_text(target.read_text().replace("shortNames", "shortNamez"))
    (tmp_path / "leftover.yaml").write_text("{}")
    assert stale_crds(tmp_path) == ["tuneops.io_finetunejobs.yaml", "leftover.yaml"]


def _walk(node, path="$"):
    yield path, node
    for key in ("properties", "additionalProperties"):
        value = node.get(key)
        if isinstance(value, dict) and key == "properties":
            for name, child in value.items():
                yield from _walk(child, f"{path}.{name}")
        elif isinstance(value, dict):
            yield from _walk(value, f"{path}{{*}}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")


@pytest.mark.parametrize("name", sorted(rendered_crds()))
def test_crd_is_structural(name):
    crd = committed()[name]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
    (version,) = crd["spec"]["versions"]
    assert version["served"] and version["storage"] and version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "$defs", "const", "title"}
    for path, node in _walk(schema):
        assert "type" in node, f"{name}: {path} has no type (non-structural)"
        assert not forbidden & set(node), f"{name}: {path} uses {forbidden & set(node)}"
        assert not ("properties" in node and "additionalProperties" in node), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be boolean in OpenAPI v3"
        if "default" in node and node["type"] == "object":
            # The apiserver checks defaults as written (CEL included), so they carry the nested defaults.
            nested = {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}
            assert node["default"] == nested, f"{path}: object default must spell out its nested defaults"
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"]
    assert (ROOT / CRD_DIR / name).read_text().startswith(GENERATED_HEADER)


def test_names_columns_and_short_names():
    crds = {c["spec"]["names"]["kind"]: c for c in committed().values()}
    expected = {
        "FineTuneJob": ("ftj", ["Phase", "Model", "Method", "Progress", "Loss", "Attempts", "Version", "Age"]),
        "ModelVersion": ("mv", ["Model", "Version", "Eval", "Verdict", "Phase", "Age"]),
        "ModelDeployment": ("mdep", ["Active", "Preview", "Phase", "Ready", "Age"]),
    }
    assert set(crds) == {k.kind for k in KINDS}
    for kind, (short, columns) in expected.items():
        spec = crds[kind]["spec"]
        assert short in spec["names"]["shortNames"]
        assert "tuneops" in spec["names"]["categories"]
        shown = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
        assert shown == columns
        schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
        for col in spec["versions"][0]["additionalPrinterColumns"]:
            node = schema
            for part in col["jsonPath"].strip(".").split("."):
                if part == "metadata":
                    break
                # every column points at a real field (or into a map such as status.metrics)
                node = node["properties"][part] if "properties" in node else node["additionalProperties"]


def test_cross_field_rules_are_cel():
    crds = {c["spec"]["names"]["kind"]: c for c in committed().values()}
    spec = crds["FineTuneJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    assert "self.method != 'qlora' || has(self.quantization)" in rules
    mv_spec = crds["ModelVersion"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": "self == oldSelf", "message": "ModelVersion spec is immutable: create a new ModelVersion"} in \
        mv_spec["x-kubernetes-validations"]
    status = crds["FineTuneJob"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_go_yaml_booleans_are_quoted():
    # Go's YAML 1.1 parser reads a bare n/y/on/off as a boolean; the apiserver would then reject the CRD.
    text = (ROOT / CRD_DIR / "tuneops.io_finetunejobs.yaml").read_text()
    assert "- 'n'" in text and "\n                  - n\n" not in text
