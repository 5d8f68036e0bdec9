"""Register a trained artifact: MLflow model registry + the local registry's ModelVersion resource.

MLflow gives the version number. One MLflow model version holds the folder `model/` (logged to the run)
with `adapter/` and, when exported, `merged/` — the same layout as the local registry folder
`TUNEOPS_HOME/registry/<model>/<version>/`, which also holds `modelversion.yaml` (a ModelVersion the operator
can apply as is). Aliases, not the deprecated stages: `candidate` for every version that passed (or had no)
gate, `champion` only by an explicit promotion, which refuses versions the gate rejected.

Registering twice for the same MLflow run and the same adapter bytes returns the existing version, so a
pod that dies after registering can simply run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
import yaml

from tuneops.api import parse_resource
from tuneops.api.base import Condition, ObjectMeta
from tuneops.api.evaluation import EvaluationResult
from tuneops.api.finetunejob import FineTuneJob
from tuneops.api.model_source import BaseModelSpec
from tuneops.api.modelversion import (
    ArtifactRef, Lineage, ModelVersion, ModelVersionSpec, ModelVersionStatus, RegistryRef,
)
from tuneops.runtime import paths
from tuneops.runtime.export import atomic_dir, atomic_write_text, directory_digest, refuse_pickles
from tuneops.runtime.gate import phase_for_verdict, summarize

log = logging.getLogger("tuneops.registry")

MODELVERSION_FILE = "modelversion.yaml"
ARTIFACT_PATH = "model"  # inside the MLflow run: model/adapter, model/merged
CANDIDATE, CHAMPION = "candidate", "champion"


class RegistryError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------
# Lineage helpers.

def spec_hash(job: FineTuneJob) -> str:
    """sha256 of the canonical JSON of the job spec (camelCase, defaults filled in)."""
    canonical = json.dumps(job.spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def describe_base(base: BaseModelSpec) -> str:
    """'smollm2/packaged:smollm2-135m-instruct', 'llama3/hf:org/name@rev', 'qwen2/path:/models/x'."""
    s = base.source
    if s.packaged:
        where = f"packaged:{s.packaged}"
    elif s.hf:
        where = f"hf:{s.hf}" + (f"@{s.revision}" if s.revision else "")
    else:
        where = f"path:{s.path}"
    return f"{base.family}/{where}" + (f"#{s.gguf_file}" if s.gguf_file else "")


def dataset_hash(run_dir: Path) -> str | None:
    """The prepared dataset's version (result.json's datasetHash, else data/manifest.json's version)."""
    layout = paths.RunLayout(run_dir)
    for path, key in ((layout.result, "datasetHash"), (layout.data / "manifest.json", "version")):
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, str) and value.startswith("sha256:"):
            return value
    return None


# ---------------------------------------------------------------------------------------------------------
# MLflow.

def mlflow_client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_tracking_uri(job: FineTuneJob, tracking_uri: str | None, home: Path | str | None = None) -> str:
    """The given URI, else spec.tracking.mlflowUri, else $MLFLOW_TRACKING_URI, else TUNEOPS_HOME/mlflow.db."""
    uri = tracking_uri or job.spec.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return f"file://{uri}" if uri.startswith("/") else uri
    return paths.mlflow_default_uri(home)


def ensure_experiment(client, name: str, tracking_uri: str, home: Path | str | None = None) -> str:
    """Experiment id; a local (non-HTTP) store keeps artifacts under TUNEOPS_HOME/mlartifacts, not ./mlruns."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        location = paths.mlflow_artifacts_dir(home).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _existing_version(client, name: str, run_id: str, adapter_sha: str):
    for mv in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if mv.tags.get("adapter_sha256") == adapter_sha:
            return mv
    return None


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, tags={"managed_by": "tuneops"})
        except MlflowException:
            client.get_registered_model(name)  # created concurrently: fine; anything else re-raises


def register_in_mlflow(client, *, name: str, run_id: str, parts: dict[str, Path], tags: dict[str, str],
                       aliases: list[str]):
    """Log each part (adapter, merged) under model/<part> in the run and register model/; returns the
    MLflow ModelVersion."""
    _ensure_registered_model(client, name)
    existing = _existing_version(client, name, run_id, tags["adapter_sha256"])
    if existing is None:
        for part, directory in parts.items():
            client.log_artifacts(run_id, str(directory), f"{ARTIFACT_PATH}/{part}")
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
        existing = client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                               description=f"tuneops job {tags.get('job', '?')}")
    for alias in aliases:
        client.set_registered_model_alias(name, alias, existing.version)
    return existing


def promote(name: str, version: int | str, *, tracking_uri: str, alias: str = CHAMPION) -> None:
    """Point `alias` at a version; a version the eval gate rejected can never be promoted."""
    client = mlflow_client(tracking_uri)
    mv = client.get_model_version(name, str(version))
    if mv.tags.get("gate_verdict") == "Failed":
        raise RegistryError(f"{name} version {version}: the eval gate rejected it; it cannot become {alias!r}")
    client.set_registered_model_alias(name, alias, str(version))


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """'models:/name@alias' -> (name, None, alias); 'models:/name/3' -> (name, '3', None)."""
    if not uri.startswith("models:/"):
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return name, None, alias
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, version, None


def download_version(uri: str, dst: Path, *, tracking_uri: str) -> Path:
    """Fetch a registered version by `models:/name@alias` or `models:/name/N` (a folder with adapter/ ...).

    Resolved through our own client rather than mlflow's models:/ repository, which reads the process-wide
    registry URI instead of the one we were given.
    """
    import mlflow.artifacts

    name, version, alias = parse_models_uri(uri)
    client = mlflow_client(tracking_uri)
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    dst.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst),
                                                     tracking_uri=tracking_uri))
    refuse_pickles(local, what=f"registered model {uri}")
    return local


# ---------------------------------------------------------------------------------------------------------
# The ModelVersion resource and the local registry.

def build_model_version(job: FineTuneJob, *, version: int, evaluation: EvaluationResult | None,
                        adapter: ArtifactRef | None, merged: ArtifactRef | None, lineage: Lineage,
                        registry: RegistryRef | None, created: datetime | None = None) -> ModelVersion:
    model = job.spec.output.registered_model
    verdict = evaluation.verdict if evaluation else "Skipped"
    checks = evaluation.checks if evaluation else []
    message = summarize(verdict, checks)
    condition = Condition(type="EvalGate", status="False" if verdict == "Failed" else "True", reason=verdict,
                          message=message, last_transition_time=created)
    return ModelVersion(
        metadata=ObjectMeta(
            name=f"{model}-v{version}", namespace=job.metadata.namespace,
            labels={"tuneops.io/model": model, "tuneops.io/job": job.metadata.name,
                    "tuneops.io/eval-verdict": verdict}),
        spec=ModelVersionSpec(model=model, version=version, base_model=job.spec.base_model, adapter=adapter,
                              merged=merged, lineage=lineage, registry=registry, evaluation=evaluation),
        status=ModelVersionStatus(phase=phase_for_verdict(verdict), message=message, conditions=[condition],
                                  evaluation=evaluation, created_time=created),
    )


def to_yaml(mv: ModelVersion) -> str:
    doc = mv.model_dump(mode="json", by_alias=True, exclude_none=True)
    parse_resource(doc)  # never write a resource the operator or the apiserver would reject
    return yaml.safe_dump(doc, sort_keys=False)


def read_model_version(path: Path) -> ModelVersion:
    path = Path(path)
    if path.is_dir():
        path = path / MODELVERSION_FILE
    resource = parse_resource(yaml.safe_load(path.read_text(encoding="utf-8")))
    if not isinstance(resource, ModelVersion):
        raise RegistryError(f"{path}: expected a ModelVersion, found {resource.kind}")
    return resource


def register_version(job: FineTuneJob, *, run_dir: Path, evaluation: EvaluationResult | None,
                     mlflow_run_id: str | None, tracking_uri: str | None,
                     home: Path | str | None = None) -> ModelVersion:
    """Contract entry point: MLflow registry + registry/<model>/<version>/ (adapter/, merged/, modelversion.yaml)."""
    layout = paths.RunLayout(run_dir)
    if not (layout.adapter / "adapter_config.json").is_file():
        raise RegistryError(f"{layout.adapter}: no adapter to register (adapter_config.json is missing)")
    refuse_pickles(layout.adapter, what="adapter")
    has_merged = layout.merged.is_dir() and any(layout.merged.glob("*.safetensors"))
    if has_merged:
        refuse_pickles(layout.merged, what="merged model")

    tracking_uri = resolve_tracking_uri(job, tracking_uri, home)
    client = mlflow_client(tracking_uri)
    if mlflow_run_id is None:
        experiment = ensure_experiment(client, job.spec.tracking.experiment, tracking_uri, home)
        run = client.create_run(experiment, run_name=f"{job.metadata.name}-register", tags={"job": job.metadata.name})
        mlflow_run_id = run.info.run_id
        client.set_terminated(mlflow_run_id)

    adapter_sha = directory_digest(layout.adapter)
    merged_sha = directory_digest(layout.merged) if has_merged else None
    verdict = evaluation.verdict if evaluation else "Skipped"
    lineage = Lineage(job=job.metadata.name, dataset_hash=dataset_hash(run_dir), dataset_uri=job.spec.dataset.source,
                      mlflow_run_id=mlflow_run_id, spec_hash=spec_hash(job))
    tags = {"job": job.metadata.name, "base_model": describe_base(job.spec.base_model),
            "dataset_version": lineage.dataset_hash or "unknown", "spec_hash": lineage.spec_hash,
            "gate_verdict": verdict, "adapter_sha256": adapter_sha, "format": "safetensors",
            "merged": "true" if has_merged else "false"}
    if merged_sha:
        tags["merged_sha256"] = merged_sha

    model = job.spec.output.registered_model
    parts = {"adapter": layout.adapter, **({"merged": layout.merged} if has_merged else {})}
    mv = register_in_mlflow(client, name=model, run_id=mlflow_run_id, parts=parts, tags=tags,
                            aliases=[] if verdict == "Failed" else [CANDIDATE])
    version = int(mv.version)
    client.set_tag(mlflow_run_id, "tuneops.model_version", f"{model}-v{version}")
    client.set_tag(mlflow_run_id, "tuneops.gate_verdict", verdict)

    target = paths.registry_dir(home) / model / str(version)
    if (target / MODELVERSION_FILE).is_file():
        existing = read_model_version(target)
        if existing.spec.adapter and existing.spec.adapter.sha256 == adapter_sha:
            return existing  # re-run after a crash: same artifact, same version
        raise RegistryError(f"{target}: holds a different artifact for {model} version {version} "
                            "(another tracking server with the same TUNEOPS_HOME?)")
    created = datetime.now(timezone.utc).replace(microsecond=0)
    registry = RegistryRef(name=model, version=str(version), tracking_uri=tracking_uri)
    with atomic_dir(target, replace=True) as tmp:
        shutil.copytree(layout.adapter, tmp / "adapter")
        if has_merged:
            shutil.copytree(layout.merged, tmp / "merged")
        resource = build_model_version(
            job, version=version, evaluation=evaluation, lineage=lineage, registry=registry, created=created,
            adapter=ArtifactRef(uri=str(target / "adapter"), sha256=adapter_sha),
            merged=ArtifactRef(uri=str(target / "merged"), sha256=merged_sha, dtype=job.spec.output.merged_dtype)
            if has_merged else None)
        atomic_write_text(tmp / MODELVERSION_FILE, to_yaml(resource))
        write_drift_profile(layout, tmp)
    try:
        client.log_text(mlflow_run_id, to_yaml(resource), f"{ARTIFACT_PATH}-{MODELVERSION_FILE}")
    except Exception:  # noqa: BLE001 - a copy for convenience; the registry entry above is what counts
        pass
    return resource


def write_drift_profile(layout: paths.RunLayout, version_dir: Path) -> Path | None:
    """drift_profile.json (token + sentence-embedding profile of the training prompts) beside the version, where
    `tuneops serve` finds it. Best effort: a version without one is still servable, without drift detection."""
    train = layout.data / "train.jsonl"
    if not train.is_file():
        return None
    from tuneops.runtime.serve.drift import PROFILE_FILE, write_training_profile

    try:
        write_training_profile(train, layout.adapter, version_dir / PROFILE_FILE)
    except Exception as exc:  # noqa: BLE001 - never fail a registration over a monitoring aid; say why
        log.warning("no drift profile for %s: %s: %s", version_dir.name, type(exc).__name__, exc)
        return None
    return version_dir / PROFILE_FILE


# ---------------------------------------------------------------------------------------------------------
# Reading the local registry (tuneops versions, tuneops serve).

def list_versions(home: Path | str | None = None, model: str | None = None) -> list[ModelVersion]:
    root = paths.registry_dir(home)
    found = []
    for path in sorted(root.glob(f"{model or '*'}/*/{MODELVERSION_FILE}")):
        found.append(read_model_version(path))
    return sorted(found, key=lambda mv: (mv.spec.model, mv.spec.version))


def resolve_version_dir(ref: str, home: Path | str | None = None) -> Path:
    """'name@3', 'name@latest' (newest not Rejected) or a folder path -> registry/<name>/<version>/."""
    candidate = Path(ref)
    if "@" not in ref:
        if (candidate / MODELVERSION_FILE).is_file():
            return candidate
        raise RegistryError(f"{ref}: expected NAME@VERSION, NAME@latest or a folder with {MODELVERSION_FILE}")
    name, _, which = ref.partition("@")
    versions = list_versions(home, name)
    if not versions:
        raise RegistryError(f"{name}: no versions in {paths.registry_dir(home)}")
    if which == "latest":
        usable = [mv for mv in versions if mv.status is None or mv.status.phase != "Rejected"]
        if not usable:
            raise RegistryError(f"{name}: every version was rejected by the eval gate")
        return paths.registry_dir(home) / name / str(usable[-1].spec.version)
    if not which.isdigit() or not any(mv.spec.version == int(which) for mv in versions):
        raise RegistryError(f"{ref}: no such version (have {', '.join(str(mv.spec.version) for mv in versions)})")
    return paths.registry_dir(home) / name / which
