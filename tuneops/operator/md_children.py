"""ModelDeployment -> Deployments (one per slot), Services, HPA and PDB (pure builders).

    <name>-blue, <name>-green   Deployments; pods labelled tuneops.io/slot=<slot>, annotated with the version
    <name>                      Service: selector tuneops.io/slot=<active slot> (matches nothing before the first
                                version is Ready, so traffic never reaches an unready or rejected version)
    <name>-preview              Service: selector tuneops.io/slot=<idle slot>
    <name>                      HorizontalPodAutoscaler (autoscaling/v2) targeting the active slot's Deployment
    <name>                      PodDisruptionBudget (maxUnavailable 1) over the active slot's pods

spec.strategy=adapters (versions that are LoRA adapters of one base model): ONE slot Deployment (the fleet)
loads every adapter (builtin: `tuneops serve --adapter`, TGI: LORA_ADAPTERS) and both Services select it;
`<name>-adapters` ConfigMap (adapters.json {"default": <active version>}) tells the builtin server which
adapter answers requests that name none, so a promotion edits the ConfigMap instead of moving a selector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tuneops.api import ModelDeploymentSpec
from tuneops.api.base import EnvVar

from .meta import (
    MD_LABEL, SLOT_LABEL, VERSION_ANNOTATION, VERSION_LABEL, child_name, common_labels, container_resources, label_value,
    schedule,
    owned,
)
from .settings import OperatorSettings

SLOTS = ("blue", "green")
NO_SLOT = "none"  # a selector value no pod has: the active Service before anything is promoted
HTTP_PORT = 80
# Custom per-pod metrics for the HPA, as a prometheus-adapter serves them from what the builtin server exports:
# the in-flight gauge as is, and rate(tuneops_http_requests_total[1m]) under the adapter's usual
# `<name>_total` -> `<name>_per_second` naming (rules in docs/guides/bluegreen-tgi-hpa.md).
POD_METRICS = {"concurrency": "tuneops_requests_in_flight", "requestsPerSecond": "tuneops_http_requests_per_second"}


@dataclass(frozen=True)
class VersionArtifacts:
    """What a slot needs from a ModelVersion to start serving it."""

    name: str
    base_model: str  # hub id or path of the base weights
    adapter_uri: str | None = None
    merged_uri: str | None = None


def slot_deployment_name(md_name: str, slot: str) -> str:
    return child_name(md_name, slot)


def preview_service_name(md_name: str) -> str:
    return child_name(md_name, "preview")


def _labels(md_name: str, component: str) -> dict[str, str]:
    return common_labels(MD_LABEL, md_name, component, name="tuneops-server")


def _meta(md: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": md["metadata"]["namespace"], "labels": _labels(md["metadata"]["name"], component)}


def selector(md_name: str, slot: str) -> dict[str, str]:
    return {MD_LABEL: label_value(md_name), SLOT_LABEL: slot}


def _local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _env(items: list[EnvVar]) -> list[dict[str, Any]]:
    out = []
    for var in items:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            out.append({"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        else:
            out.append({"name": var.name, "value": var.value})
    return out


def _merge_env(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """User env from the spec wins over the operator's defaults (one entry per name)."""
    names = {e["name"] for e in theirs}
    return [e for e in ours if e["name"] not in names] + theirs


ADAPTERS_ANNOTATION = "tuneops.io/adapters"  # fleet Deployment: {"<version>": "<adapter uri>", ...}
ADAPTERS_FILE_DIR = "/etc/tuneops/adapters"


def adapters_configmap_name(md_name: str) -> str:
    return child_name(md_name, "adapters")


def adapters_configmap(md: dict[str, Any], default: str) -> dict[str, Any]:
    """What the builtin server polls (--adapters-file): the adapter answering requests that name none."""
    name = adapters_configmap_name(md["metadata"]["name"])
    return owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(md, name, "adapters"),
                  "data": {"adapters.json": json.dumps({"default": default})}}, md)


def _registry_dir(version: VersionArtifacts) -> str:
    artifact = version.merged_uri or version.adapter_uri or ""
    return _local_path(artifact).rstrip("/").rsplit("/", 1)[0] or "/"


def _fleet_engine(spec: ModelDeploymentSpec, adapters: list[VersionArtifacts], settings: OperatorSettings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Container (without env/probes) and env of a server that loads every adapter onto one base."""
    engine = spec.engine
    if engine.kind == "tgi":
        # TGI multi-LoRA: requests pick one with adapter_id (chat: `model`); no adapter_id = the base model.
        env = [{"name": "PORT", "value": str(engine.port)}, {"name": "HF_HUB_OFFLINE", "value": "1"},
               {"name": "MODEL_ID", "value": adapters[0].base_model},
               {"name": "LORA_ADAPTERS", "value": ",".join(f"{a.name}={_local_path(a.adapter_uri or '')}"
                                                            for a in adapters)}]
        return {"name": "server", "image": engine.image or settings.tgi_image, "args": list(engine.args)}, env
    first, *rest = adapters
    command = ["tuneops", "serve", "--version", _registry_dir(first), "--adapter-name", first.name]
    for a in rest:
        command += ["--adapter", f"{a.name}={_registry_dir(a)}"]
    command += ["--adapters-file", f"{ADAPTERS_FILE_DIR}/adapters.json", "--host", "0.0.0.0",
                "--port", str(engine.port), *engine.args]
    return ({"name": "server", "image": engine.image or settings.serve_image, "command": command},
            [{"name": "HF_HUB_OFFLINE", "value": "1"}])


def engine_container(spec: ModelDeploymentSpec, version: VersionArtifacts, settings: OperatorSettings,
                     adapters: list[VersionArtifacts] | None = None) -> dict:
    engine = spec.engine
    port = engine.port
    if adapters:
        container, env = _fleet_engine(spec, adapters, settings)
    elif engine.kind == "tgi":
        # TGI: merged weights are a model of their own; otherwise base model + the LoRA adapter by name.
        env = [{"name": "PORT", "value": str(port)}, {"name": "HF_HUB_OFFLINE", "value": "1"},
               {"name": "MODEL_ID", "value": _local_path(version.merged_uri) if version.merged_uri
                else version.base_model}]
        if version.adapter_uri and not version.merged_uri:
            env.append({"name": "LORA_ADAPTERS", "value": f"{version.name}={_local_path(version.adapter_uri)}"})
        container: dict[str, Any] = {"name": "server", "image": engine.image or settings.tgi_image,
                                     "args": list(engine.args)}
    else:
        # builtin: `tuneops serve` loads a registry dir (merged if present, else base + adapter).
        artifact = version.merged_uri or version.adapter_uri or ""
        registry_dir = _local_path(artifact).rstrip("/").rsplit("/", 1)[0] or "/"
        env = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
        container = {"name": "server", "image": engine.image or settings.serve_image,
                     "command": ["tuneops", "serve", "--version", registry_dir, "--host", "0.0.0.0",
                                 "--port", str(port), *engine.args]}
    env.append({"name": "TUNEOPS_MODEL_VERSION",
                "value": ",".join(a.name for a in adapters) if adapters else version.name})
    container["env"] = _merge_env(env, _env(engine.env))
    container["ports"] = [{"name": "http", "containerPort": port}]
    health = {"httpGet": {"path": "/health", "port": "http"}}
    # The builtin server's /health is 503 while draining; its liveness endpoint is /livez (TGI has /health only).
    live = {"httpGet": {"path": "/livez" if engine.kind == "builtin" else "/health", "port": "http"}}
    container["readinessProbe"] = {**health, "periodSeconds": 5, "failureThreshold": 3}
    container["livenessProbe"] = {**live, "periodSeconds": 10, "failureThreshold": 6}
    # Weights load before the port opens (TGI warms up first): allow up to 30 minutes.
    container["startupProbe"] = {**health, "periodSeconds": 10, "failureThreshold": 180}
    if resources := container_resources(spec.resources):
        container["resources"] = resources
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if adapters and engine.kind == "builtin":
        # The directory, not a subPath: only directory mounts see ConfigMap updates.
        container["volumeMounts"].append({"name": "adapters", "mountPath": ADAPTERS_FILE_DIR, "readOnly": True})
    return container


def fleet_deployment(md: dict[str, Any], spec: ModelDeploymentSpec, slot: str, adapters: list[VersionArtifacts],
                     active: str, replicas: int | None, settings: OperatorSettings) -> dict[str, Any]:
    """The one Deployment of spec.strategy=adapters. Its pod template depends only on the adapter *set*
    (sorted), so a promotion (a new default) never restarts pods; only loading a new adapter does."""
    adapters = sorted(adapters, key=lambda a: a.name)
    dep = slot_deployment(md, spec, slot, adapters[0], replicas, settings)
    loaded = json.dumps({a.name: a.adapter_uri for a in adapters}, sort_keys=True, separators=(",", ":"))
    template = dep["spec"]["template"]
    template["metadata"]["labels"].pop(VERSION_LABEL, None)
    template["metadata"]["annotations"] = {ADAPTERS_ANNOTATION: loaded}
    dep["metadata"]["annotations"] = {VERSION_ANNOTATION: active, ADAPTERS_ANNOTATION: loaded}
    dep["metadata"]["labels"][VERSION_LABEL] = label_value(active)
    if len(adapters) > 1:
        pod = template["spec"]
        pod["containers"] = [engine_container(spec, adapters[0], settings, adapters=adapters)]
        if spec.engine.kind == "builtin":
            pod["volumes"].append({"name": "adapters", "configMap": {
                "name": adapters_configmap_name(md["metadata"]["name"])}})
    return dep


def slot_deployment(md: dict[str, Any], spec: ModelDeploymentSpec, slot: str, version: VersionArtifacts | None,
                    replicas: int | None, settings: OperatorSettings) -> dict[str, Any]:
    """The Deployment of one slot. `replicas=None` leaves the count to the HPA (the active slot).

    A slot with no version yet is not built (the planner skips it)."""
    assert version is not None
    name = md["metadata"]["name"]
    labels = {**_labels(name, "server"), **selector(name, slot), VERSION_LABEL: label_value(version.name)}
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.resources.shared_memory:
        shm["sizeLimit"] = spec.resources.shared_memory
    pod_spec: dict[str, Any] = {"containers": [engine_container(spec, version, settings)],
                                "volumes": [{"name": "dshm", "emptyDir": shm}]}
    schedule(pod_spec, spec.resources)
    if spec.resources.service_account_name:  # e.g. bound to a cloud IAM role that can read the model bucket
        pod_spec["serviceAccountName"] = spec.resources.service_account_name
    meta = _meta(md, slot_deployment_name(name, slot), "server")
    meta["labels"].update({SLOT_LABEL: slot, VERSION_LABEL: label_value(version.name)})
    meta["annotations"] = {VERSION_ANNOTATION: version.name}
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(name, slot)},
        "template": {"metadata": {"labels": labels, "annotations": {VERSION_ANNOTATION: version.name}},
                     "spec": pod_spec},
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    return owned({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": dep_spec}, md)


def service(md: dict[str, Any], spec: ModelDeploymentSpec, name: str, slot: str | None, role: str) -> dict:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(md, name, role),
           "spec": {"selector": selector(md["metadata"]["name"], slot or NO_SLOT),
                    "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": spec.engine.port}]}}
    return owned(svc, md)


def hpa(md: dict[str, Any], spec: ModelDeploymentSpec, slot: str) -> dict[str, Any]:
    auto = spec.autoscaling
    assert auto is not None
    if auto.metric.type == "cpu":
        metric = {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": int(auto.metric.target)}}}
    else:
        metric = {"type": "Pods", "pods": {"metric": {"name": POD_METRICS[auto.metric.type]},
                                           "target": {"type": "AverageValue", "averageValue": str(auto.metric.target)}}}
    name = md["metadata"]["name"]
    obj = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(md, name, "autoscaler"),
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": slot_deployment_name(name, slot)},
                    "minReplicas": auto.min_replicas, "maxReplicas": auto.max_replicas, "metrics": [metric]}}
    return owned(obj, md)


def pdb(md: dict[str, Any], slot: str | None) -> dict[str, Any]:
    name = md["metadata"]["name"]
    obj = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(md, name, "disruption-budget"),
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name, slot or NO_SLOT)}}}
    return owned(obj, md)
