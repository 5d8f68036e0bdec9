"""spec.strategy=adapters on the real control plane (kwok runs the pods): one fleet serves two adapters of one
base; the API server accepts the rendered fleet Deployment and ConfigMap; promotion moves the default adapter
in the ConfigMap and does not touch the fleet's pod template (no restart, no second fleet)."""

from __future__ import annotations

import json

import pytest

from tests.operator.conftest import get_json, wait

pytestmark = pytest.mark.kube


def _mv(name: str, version: int) -> dict:
    return {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
            "spec": {"model": "bot", "version": version,
                     "baseModel": {"family": "llama3", "source": {"hf": "meta-llama/Meta-Llama-3-8B-Instruct"}},
                     "adapter": {"uri": f"s3://models/bot/{version}/adapter"},
                     "evaluation": {"verdict": "Passed", "checks": []}}}


def _status(kube, ns) -> dict:
    return (get_json(kube, "mdep", "bot", namespace=ns) or {}).get("status") or {}


def _default(kube, ns) -> str | None:
    cm = get_json(kube, "cm", "bot-adapters", namespace=ns)
    return cm and json.loads(cm["data"]["adapters.json"])["default"]


def _replicasets(kube, ns) -> set[str]:
    items = get_json(kube, "rs", "-l", "tuneops.io/modeldeployment=bot", namespace=ns)["items"]
    return {rs["metadata"]["name"] for rs in items}


def test_adapter_fleet_previews_and_promotes_by_moving_the_default(ns, operator):
    kube = operator
    for name, version in (("bot-v1", 1), ("bot-v2", 2)):
        kube.apply(json.dumps(_mv(name, version)), namespace=ns)
    md = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "bot"},
          "spec": {"model": "bot", "strategy": "adapters", "activeVersion": "bot-v1", "previewVersion": "bot-v2",
                   "engine": {"kind": "builtin", "port": 8080}, "replicas": 2}}
    kube.apply(json.dumps(md), namespace=ns)
    st = wait("preview loaded next to v1", lambda: (s := _status(kube, ns)).get("previewVersion") == "bot-v2"
              and s.get("phase") == "Healthy" and s, timeout=120)
    assert (st["activeSlot"], st["activeVersion"]) == ("blue", "bot-v1")
    assert _default(kube, ns) == "bot-v1"
    for svc in ("bot", "bot-preview"):  # both Services select the one fleet
        assert get_json(kube, "svc", svc, namespace=ns)["spec"]["selector"]["tuneops.io/slot"] == "blue"
    fleet = get_json(kube, "deploy", "bot-blue", namespace=ns)
    command = fleet["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--adapter" in command and "bot-v2=s3://models/bot/2" in command
    assert get_json(kube, "deploy", "bot-green", namespace=ns) is None  # no second fleet

    replicasets = _replicasets(kube, ns)
    assert replicasets  # the Deployment controller runs (one ReplicaSet per template seen so far)
    kube.kubectl("patch", "mdep", "bot", "-n", ns, "--type=merge",
                 "-p", json.dumps({"spec": {"activeVersion": "bot-v2", "previewVersion": None}}))
    wait("v2 is the default", lambda: _status(kube, ns).get("activeVersion") == "bot-v2"
         and _default(kube, ns) == "bot-v2", timeout=60)
    after = get_json(kube, "deploy", "bot-blue", namespace=ns)
    # The pod template is untouched, so no new ReplicaSet and no pod restart (the Deployment's generation does
    # move: the apiserver bumps it on annotation changes too).
    assert after["spec"]["template"] == fleet["spec"]["template"]
    assert _replicasets(kube, ns) == replicasets
    assert after["metadata"]["annotations"]["tuneops.io/version"] == "bot-v2"
    events = get_json(kube, "events", "--field-selector", "involvedObject.name=bot", namespace=ns)["items"]
    assert "Promoted" in {e["reason"] for e in events}
