"""FineTuneJob -> the Kubernetes objects that run it (pure builders; no API calls).

One training "revision" (a spec hash) runs as one batch/v1 Job `<name>-r<k>`; a spec edit of an unfinished job
starts revision k+1, which resumes from the newest checkpoint. Children per job:

    <name>-trainer          ServiceAccount the pods run as (unless spec.resources.serviceAccountName names one)
    <name>-progress         ConfigMap the trainer patches with progress JSON (data.progress)
    <name>-progress         Role + RoleBinding: get/patch on exactly that ConfigMap (resourceNames)
    <name>-r<k>-spec        ConfigMap holding the validated spec as job.yaml
    <name>-r<k>             Job (Indexed + headless Service of the same name for multi-node)
"""

from __future__ import annotations

from typing import Any

import yaml

from tuneops.api import FineTuneJobSpec
from tuneops.api.base import EnvVar

from .meta import (
    container_resources, schedule,
    CR_API_VERSION, FTJ_LABEL, REVISION_LABEL, SPEC_HASH_ANNOTATION, child_name, common_labels, owned,
)
from .settings import OperatorSettings

SPEC_MOUNT = "/etc/tuneops"
SPEC_FILE = f"{SPEC_MOUNT}/job.yaml"
CHECKPOINT_MOUNT = "/checkpoints"
OUTPUT_MOUNT = "/output"
CONTAINER = "trainer"


def job_name(name: str, revision: int) -> str:
    return child_name(name, f"r{revision}")


def progress_configmap_name(name: str) -> str:
    return child_name(name, "progress")


def service_account_name(name: str) -> str:
    return child_name(name, "trainer")


def spec_configmap_name(name: str, revision: int) -> str:
    return child_name(name, f"r{revision}-spec")


def _labels(name: str, component: str, revision: int | None = None) -> dict[str, str]:
    labels = common_labels(FTJ_LABEL, name, component, name="tuneops-trainer")
    if revision is not None:
        labels[REVISION_LABEL] = str(revision)
    return labels


def _meta(ftj: dict[str, Any], name: str, component: str, revision: int | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": ftj["metadata"]["namespace"],
            "labels": _labels(ftj["metadata"]["name"], component, revision)}


def spec_configmap(ftj: dict[str, Any], spec: FineTuneJobSpec, revision: int) -> dict[str, Any]:
    """The resolved, validated spec as the training pod reads it (`--spec /etc/tuneops/job.yaml`)."""
    doc = {"apiVersion": CR_API_VERSION, "kind": "FineTuneJob",
           "metadata": {"name": ftj["metadata"]["name"], "namespace": ftj["metadata"]["namespace"]},
           "spec": spec.to_wire()}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": _meta(ftj, spec_configmap_name(ftj["metadata"]["name"], revision), "config", revision),
          "data": {"job.yaml": yaml.safe_dump(doc, sort_keys=False)}}
    return owned(cm, ftj)


def progress_configmap(ftj: dict[str, Any]) -> dict[str, Any]:
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": _meta(ftj, progress_configmap_name(ftj["metadata"]["name"]), "progress"), "data": {}}
    return owned(cm, ftj)


def service_account(ftj: dict[str, Any]) -> dict[str, Any]:
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": _meta(ftj, service_account_name(ftj["metadata"]["name"]), "training")}
    return owned(sa, ftj)


def progress_role(ftj: dict[str, Any]) -> dict[str, Any]:
    """Least privilege for the pod: get/patch on its own progress ConfigMap, nothing else."""
    name = ftj["metadata"]["name"]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(ftj, progress_configmap_name(name), "progress"),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "resourceNames": [progress_configmap_name(name)], "verbs": ["get", "patch"]}]}
    return owned(role, ftj)


def trainer_service_account(ftj: dict[str, Any], spec: FineTuneJobSpec) -> str:
    """spec.resources.serviceAccountName when set (e.g. bound to a cloud IAM role for the buckets), else the
    `<job>-trainer` SA the operator creates."""
    return spec.resources.service_account_name or service_account_name(ftj["metadata"]["name"])


def progress_role_binding(ftj: dict[str, Any], spec: FineTuneJobSpec | None = None) -> dict[str, Any]:
    """Binds the progress Role to the SA the training pods run as (the user's, when the spec names one)."""
    name = ftj["metadata"]["name"]
    subject = trainer_service_account(ftj, spec) if spec is not None else service_account_name(name)
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": _meta(ftj, progress_configmap_name(name), "progress"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": progress_configmap_name(name)},
               "subjects": [{"kind": "ServiceAccount", "name": subject,
                             "namespace": ftj["metadata"]["namespace"]}]}
    return owned(binding, ftj)


def headless_service(ftj: dict[str, Any], revision: int) -> dict[str, Any]:
    """Stable DNS for multi-node rendezvous: `<job>-<index>.<job>` resolves to each indexed pod."""
    name = job_name(ftj["metadata"]["name"], revision)
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": _meta(ftj, name, "rendezvous", revision),
           "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                    "selector": {FTJ_LABEL: _labels(ftj["metadata"]["name"], "training")[FTJ_LABEL],
                                 REVISION_LABEL: str(revision)},
                    "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}]}}
    return owned(svc, ftj)


def _env_var(var: EnvVar) -> dict[str, Any]:
    if var.value_from is not None:
        ref = var.value_from.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": var.name, "value": var.value}


def _output_dir(spec: FineTuneJobSpec, name: str) -> str:
    # With a PVC the run dir (checkpoints included) survives pods, so a new pod resumes from it.
    return f"{CHECKPOINT_MOUNT}/{name}" if spec.storage.volume_claim else f"{OUTPUT_MOUNT}/{name}"


def _command(spec: FineTuneJobSpec, name: str, settings: OperatorSettings) -> list[str]:
    train = ["-m", "tuneops.runtime.train", "--spec", SPEC_FILE, "--output", _output_dir(spec, name)]
    dist = spec.distribution
    procs = max(dist.gpus_per_node, 1)
    if dist.nodes > 1:
        return ["torchrun", f"--nnodes={dist.nodes}", f"--nproc-per-node={procs}", "--node-rank=$(NODE_RANK)",
                "--master-addr=$(MASTER_ADDR)", f"--master-port={settings.rendezvous_port}", *train]
    if procs > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={procs}", *train]
    return ["python", *train]


def _env(ftj: dict[str, Any], spec: FineTuneJobSpec, revision: int, settings: OperatorSettings) -> list[dict]:
    name, namespace = ftj["metadata"]["name"], ftj["metadata"]["namespace"]
    env: list[dict[str, Any]] = [
        {"name": "TUNEOPS_PROGRESS_CONFIGMAP", "value": progress_configmap_name(name)},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "TUNEOPS_JOB_NAME", "value": name},
        {"name": "TUNEOPS_REVISION", "value": str(revision)},
        {"name": "HF_HUB_OFFLINE", "value": "1"},  # never download at run time
    ]
    if spec.storage.checkpoints:
        env.append({"name": "TUNEOPS_CHECKPOINT_URI",
                    "value": spec.storage.checkpoints.rstrip("/") + f"/{namespace}/{name}/"})
    if spec.storage.output:
        env.append({"name": "TUNEOPS_OUTPUT_URI", "value": spec.storage.output.rstrip("/") + f"/{namespace}/{name}/"})
    mlflow = spec.tracking.mlflow_uri or settings.mlflow_uri
    if mlflow:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": mlflow})
    if spec.distribution.nodes > 1:
        svc = job_name(name, revision)
        env += [
            # Indexed Jobs publish the index as an annotation; node 0 hosts the rendezvous.
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "MASTER_ADDR", "value": f"{svc}-0.{svc}"},
            {"name": "MASTER_PORT", "value": str(settings.rendezvous_port)},
            {"name": "NNODES", "value": str(spec.distribution.nodes)},
            {"name": "NPROC_PER_NODE", "value": str(max(spec.distribution.gpus_per_node, 1))},
        ]
    return env + [_env_var(v) for v in spec.env]


def _volumes(ftj: dict[str, Any], spec: FineTuneJobSpec, revision: int) -> tuple[list[dict], list[dict]]:
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.resources.shared_memory:
        shm["sizeLimit"] = spec.resources.shared_memory
    volumes = [
        {"name": "spec", "configMap": {"name": spec_configmap_name(ftj["metadata"]["name"], revision)}},
        {"name": "dshm", "emptyDir": shm},
    ]
    mounts = [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    if spec.storage.volume_claim:
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": spec.storage.volume_claim}})
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
    else:
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": OUTPUT_MOUNT})
    return volumes, mounts


def _env_from(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    names = [s.name for s in (spec.storage.credentials_secret, spec.tracking.credentials_secret) if s is not None]
    return [{"secretRef": {"name": n}} for n in dict.fromkeys(names)]


def training_job(ftj: dict[str, Any], spec: FineTuneJobSpec, revision: int, digest: str,
                 settings: OperatorSettings) -> dict[str, Any]:
    """The batch/v1 Job. Preempted pods (DisruptionTarget) are retried without consuming backoffLimit."""
    name = ftj["metadata"]["name"]
    nodes = spec.distribution.nodes
    volumes, mounts = _volumes(ftj, spec, revision)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.training_image,
        "command": _command(spec, name, settings),
        "env": _env(ftj, spec, revision, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if env_from := _env_from(spec):
        container["envFrom"] = env_from
    if resources := container_resources(spec.resources):
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy; the Job controller makes new pods
        "serviceAccountName": trainer_service_account(ftj, spec),
        "containers": [container],
        "volumes": volumes,
    }
    schedule(pod_spec, spec.resources)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        # The annotation carries the full parent name (labels are cut to 63 chars) for the pod watch.
        "template": {"metadata": {"labels": _labels(name, "training", revision), "annotations": {
            **settings.training_pod_annotations, FTJ_LABEL: name}},
                     "spec": pod_spec},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if nodes > 1:
        job_spec.update({"completionMode": "Indexed", "completions": nodes, "parallelism": nodes})
        pod_spec["subdomain"] = job_name(name, revision)
    meta = _meta(ftj, job_name(name, revision), "training", revision)
    meta["annotations"] = {SPEC_HASH_ANNOTATION: digest}
    return owned({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}, ftj)


def children(ftj: dict[str, Any], spec: FineTuneJobSpec, revision: int, digest: str,
             settings: OperatorSettings) -> list[dict[str, Any]]:
    """Everything one revision needs, in creation order (the Job last, once what it mounts exists)."""
    objs = [progress_configmap(ftj), progress_role(ftj), progress_role_binding(ftj, spec),
            spec_configmap(ftj, spec, revision)]
    if not spec.resources.service_account_name:  # the user's SA is theirs to create
        objs.insert(0, service_account(ftj))
    if spec.distribution.nodes > 1:
        objs.append(headless_service(ftj, revision))
    objs.append(training_job(ftj, spec, revision, digest, settings))
    return objs
