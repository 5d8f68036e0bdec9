"""The generated CRDs (crds/*.yaml) work on a real kube-apiserver."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.cases import CASES

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
CRDS = sorted((REPO / "crds").glob("*.yaml"))
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml")
                  if (yaml.safe_load(p.read_text()) or {}).get("apiVersion", "").startswith("tuneops.io/"))


@pytest.fixture(scope="module")
def crds(kube):
    assert CRDS, "crds/*.yaml missing: run `tuneops crds`"
    names = []
    for path in CRDS:
        # Server-side apply: large CRDs overflow client-side apply's last-applied annotation.
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", path)
        names.append(yaml.safe_load(path.read_text())["metadata"]["name"])
    for name in names:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    kube.wait_for("tuneops.io discovery",
                  lambda: kube.kubectl("get", "finetunejobs", "-A", check=False).returncode == 0)
    return names


@pytest.fixture(scope="module")
def ns(kube, crds):
    return kube.create_namespace("crds")


def _in_namespace(doc: dict, ns: str) -> str:
    doc = json.loads(json.dumps(doc))
    doc["metadata"]["namespace"] = ns
    return json.dumps(doc)


def test_crds_established_with_v1alpha1(kube, crds):
    assert "finetunejobs.tuneops.io" in crds
    for name in crds:
        crd = kube.get("crd", name)
        assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]
        established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert established["Established"] == "True"
        assert established["NamesAccepted"] == "True"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(kube, ns, example):
    doc = yaml.safe_load(example.read_text())
    kube.kubectl("create", "-f", "-", input=_in_namespace(doc, ns))
    got = kube.get(doc["kind"].lower(), doc["metadata"]["name"], namespace=ns)
    assert got["spec"] == doc["spec"] or got["spec"].keys() >= doc["spec"].keys()


def test_get_finetunejobs_prints_columns(kube, ns):
    doc = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
    doc["metadata"]["name"] = "columns-check"
    kube.kubectl("create", "-f", "-", input=_in_namespace(doc, ns))
    out = kube.kubectl("get", "finetunejobs", "columns-check", "-n", ns).stdout.splitlines()
    header = out[0].split()
    for column in ("NAME", "PHASE", "MODEL", "METHOD", "PROGRESS", "LOSS", "ATTEMPTS", "VERSION", "AGE"):
        assert column in header, out[0]
    assert out[1].split()[:1] == ["columns-check"]
    assert "smollm2" in out[1] and "lora" in out[1]
    # The short name and category work too.
    assert "columns-check" in kube.kubectl("get", "ftj", "-n", ns).stdout
    assert "columns-check" in kube.kubectl("get", "tuneops", "-n", ns).stdout


@pytest.mark.parametrize("case", [c for c in CASES if c.apiserver], ids=lambda c: c.id)
def test_invalid_resource_rejected_naming_the_field(kube, ns, case):
    doc = case.document()
    doc["metadata"]["name"] = f"invalid-{case.id}"[:63]
    r = kube.kubectl("create", "-f", "-", input=_in_namespace(doc, ns), check=False)
    assert r.returncode != 0, f"apiserver accepted {case.id}"
    # The apiserver writes map keys as gate[loss]; cases.py as gate.loss.
    message = re.sub(r"\[([^\]0-9][^\]]*)\]", r".\1", r.stderr)
    assert case.field in message, r.stderr
