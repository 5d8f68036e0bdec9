"""Small factories for the objects the operator reads (as the apiserver returns them)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from tuneops.operator import ftj_children as ftj_kids
from tuneops.operator.meta import FTJ_LABEL, MD_LABEL, REVISION_LABEL, SPEC_HASH_ANNOTATION, VERSION_ANNOTATION

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 11, 25, 9, 0, 0, tzinfo=timezone.utc)


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def finetunejob(name: str = "sft", namespace: str = "ml", spec: dict | None = None, status: dict | None = None,
                generation: int = 1, example_file: str = "smollm2-lora.yaml") -> dict[str, Any]:
    doc = example(example_file)
    doc["metadata"] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": generation,
                       "creationTimestamp": "2026-11-25T08:00:00Z"}
    if spec is not None:
        doc["spec"] = spec
    if status is not None:
        doc["status"] = status
    return doc


def job(ftj: dict, revision: int, digest: str, outcome: str | None = None, reason: str = "") -> dict[str, Any]:
    conditions = []
    if outcome:
        conditions.append({"type": outcome, "status": "True", "reason": reason or outcome, "message": ""})
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": ftj_kids.job_name(ftj["metadata"]["name"], revision),
                         "namespace": ftj["metadata"]["namespace"],
                         "labels": {FTJ_LABEL: ftj["metadata"]["name"], REVISION_LABEL: str(revision)},
                         "annotations": {SPEC_HASH_ANNOTATION: digest}},
            "spec": {}, "status": {"conditions": conditions}}


def pod(ftj: dict, revision: int, created: str, phase: str = "Running", result: dict | None = None,
        exit_code: int | None = None, disrupted: bool = False, reason: str | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase, "conditions": []}
    if phase in ("Succeeded", "Failed"):
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        st["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
            "message": json.dumps(result) if result else "", "finishedAt": "2026-11-25T08:30:00Z"}}}]
    if disrupted:
        st["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"})
    stamp = created[11:19].replace(":", "")  # one pod per creation second: unique names, like the Job's suffix
    job_name = ftj_kids.job_name(ftj["metadata"]["name"], revision)
    return {"metadata": {"name": f"{job_name}-{stamp}", "creationTimestamp": created,
                         "labels": {FTJ_LABEL: ftj["metadata"]["name"], REVISION_LABEL: str(revision),
                                    "job-name": job_name}},
            "status": st}


def modelversion(name: str, verdict: str | None = "Passed", phase: str | None = "Ready", version: int = 1,
                 model: str = "support-bot", adapter: str = "s3://b/m/adapter", merged: str | None = None,
                 annotations: dict | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model, "version": version,
                            "baseModel": {"family": "llama3", "source": {"hf": "meta-llama/Meta-Llama-3-8B-Instruct"}},
                            "adapter": {"uri": adapter, "format": "safetensors"}}
    if merged:
        spec["merged"] = {"uri": merged, "format": "safetensors"}
    if verdict:
        spec["evaluation"] = {"verdict": verdict, "checks": [
            {"metric": "rougeL", "passed": verdict != "Failed", "reason": "rougeL 0.2 < min 0.3"}]}
    mv = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion",
          "metadata": {"name": name, "namespace": "ml", "generation": 1, "uid": f"uid-{name}",
                       "creationTimestamp": "2026-11-25T08:00:00Z", "annotations": annotations or {}},
          "spec": spec}
    if phase:
        mv["status"] = {"phase": phase}
    return mv


def modeldeployment(name: str = "bot", active: str = "bot-v1", preview: str | None = None, status: dict | None = None,
                    **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "support-bot", "activeVersion": active,
                            "engine": {"kind": "tgi", "port": 8080},
                            "replicas": 2,
                            "promotion": {"scaleDownDelaySeconds": 600}}
    if preview:
        spec["previewVersion"] = preview
    spec.update(copy.deepcopy(spec_overrides))
    md = {"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "generation": 1}, "spec": spec}
    if status is not None:
        md["status"] = status
    return md


def deployment(md_name: str, slot: str, version: str, replicas: int, ready: int,
               generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": f"{md_name}-{slot}", "generation": generation,
                         "labels": {MD_LABEL: md_name}, "annotations": {VERSION_ANNOTATION: version}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": ready,
                       "replicas": replicas}}


def finetunejob_json(name: str, ns: str, **spec_changes) -> str:
    """The embedded-default example as a FineTuneJob `name` in `ns`, with top-level spec fields replaced."""
    doc = example("smollm2-lora.yaml")
    doc["metadata"] = {"name": name, "namespace": ns}
    doc["spec"].update(copy.deepcopy(spec_changes))
    return json.dumps(doc)
