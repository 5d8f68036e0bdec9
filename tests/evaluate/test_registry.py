"""Registry against a real `mlflow server` process (sqlite backend, local artifacts): register, alias, load
back by models:/name@alias, lineage tags, the ModelVersion resource, idempotent re-registration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tuneops.api import parse_resource
from tuneops.api.evaluation import EvaluationSpec
from tuneops.api.finetunejob import FineTuneJob
from tuneops.runtime.evaluate import judge
from tuneops.runtime.export import directory_digest, load_adapted
from tuneops.runtime.registry import (
    CANDIDATE, CHAMPION, RegistryError, download_version, list_versions, mlflow_client, promote, read_model_version,
    register_version, resolve_version_dir,
)

REPO = Path(__file__).resolve().parents[2]
DATASET = "sha256:" + "ab" * 32
SPEC = EvaluationSpec.model_validate({"gate": {"loss": {"maxRatioVsBase": 1.0}}})
PASSED = judge(SPEC, {"loss": 2.0}, {"loss": 1.5})
FAILED = judge(SPEC, {"loss": 2.0}, {"loss": 2.5})


def make_job(model: str) -> FineTuneJob:
    doc = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
    doc["spec"]["output"]["registeredModel"] = model
    return parse_resource(doc)


def make_run_dir(tmp_path: Path, adapter: Path, *, merged: Path | None = None) -> Path:
    run = tmp_path / "run"
    shutil.copytree(adapter, run / "adapter")
    if merged:
        shutil.copytree(merged, run / "merged")
    (run / "data").mkdir()
    (run / "data" / "manifest.json").write_text(json.dumps({"version": DATASET}))
    return run


def start_run(uri: str, job: FineTuneJob) -> str:
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(job.spec.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(job.spec.tracking.experiment)
    return client.create_run(exp_id).info.run_id


def test_register_alias_and_load_back(mlflow_server, tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    job = make_job("triage-pass")
    run_dir = make_run_dir(tmp_path, tiny_adapter_dir)
    run_id = start_run(mlflow_server, job)
    home = tmp_path / "home"
    mv = register_version(job, run_dir=run_dir, evaluation=PASSED, mlflow_run_id=run_id,
                          tracking_uri=mlflow_server, home=home)

    # MLflow decided the number; the alias and lineage tags are on the registered version
    client = mlflow_client(mlflow_server)
    by_alias = client.get_model_version_by_alias("triage-pass", CANDIDATE)
    assert mv.spec.version == int(by_alias.version) == 1
    assert by_alias.run_id == run_id
    tags = by_alias.tags
    assert tags["job"] == "support-triage-smollm2"
    assert tags["base_model"] == "smollm2/packaged:smollm2-135m-instruct"
    assert tags["dataset_version"] == DATASET
    assert tags["gate_verdict"] == "Passed"
    assert tags["spec_hash"] == mv.spec.lineage.spec_hash and tags["spec_hash"].startswith("sha256:")
    assert tags["adapter_sha256"] == directory_digest(tiny_adapter_dir)

    # read back through models:/name@alias and load it as a working adapter
    local = download_version("models:/triage-pass@candidate", tmp_path / "dl", tracking_uri=mlflow_server)
    assert directory_digest(local / "adapter") == tags["adapter_sha256"]
    load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), local / "adapter")

    # the ModelVersion resource: valid, Ready, with lineage, and stored in the local registry
    stored = home / "registry" / "triage-pass" / "1"
    doc = yaml.safe_load((stored / "modelversion.yaml").read_text())
    resource = parse_resource(doc)
    assert resource == mv
    assert mv.metadata.name == "triage-pass-v1" and mv.metadata.namespace == "ml"
    assert mv.status.phase == "Ready" and mv.status.evaluation.verdict == "Passed"
    assert mv.spec.lineage.dataset_hash == DATASET and mv.spec.lineage.mlflow_run_id == run_id
    assert mv.spec.registry.version == "1" and mv.spec.registry.tracking_uri == mlflow_server
    assert mv.spec.adapter.sha256 == directory_digest(stored / "adapter")
    assert Path(mv.spec.adapter.uri) == stored / "adapter" and mv.spec.merged is None

    # registering the same run again (a pod retried) returns the same version
    again = register_version(job, run_dir=run_dir, evaluation=PASSED, mlflow_run_id=run_id,
                             tracking_uri=mlflow_server, home=home)
    assert again.spec.version == 1
    assert len(client.search_model_versions("name='triage-pass'")) == 1


def test_rejected_version_gets_no_alias_and_cannot_be_promoted(mlflow_server, tiny_adapter_dir, tmp_path):
    job = make_job("triage-gate")
    home = tmp_path / "home"
    good = register_version(job, run_dir=make_run_dir(tmp_path / "a", tiny_adapter_dir), evaluation=PASSED,
                            mlflow_run_id=start_run(mlflow_server, job), tracking_uri=mlflow_server, home=home)
    bad = register_version(job, run_dir=make_run_dir(tmp_path / "b", tiny_adapter_dir), evaluation=FAILED,
                           mlflow_run_id=start_run(mlflow_server, job), tracking_uri=mlflow_server, home=home)
    assert (good.spec.version, bad.spec.version) == (1, 2)
    assert bad.status.phase == "Rejected"
    assert bad.status.conditions[0].status == "False" and "eval gate failed: loss" in bad.status.message
    assert bad.metadata.labels["tuneops.io/eval-verdict"] == "Failed"

    client = mlflow_client(mlflow_server)
    assert client.get_model_version_by_alias("triage-gate", CANDIDATE).version == "1"
    assert client.get_model_version("triage-gate", "2").tags["gate_verdict"] == "Failed"
    with pytest.raises(RegistryError, match="the eval gate rejected it"):
        promote("triage-gate", 2, tracking_uri=mlflow_server)
    promote("triage-gate", 1, tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias("triage-gate", CHAMPION).version == "1"

    # the local registry lists both; @latest skips the rejected one
    assert [(mv.spec.version, mv.status.phase) for mv in list_versions(home)] == [(1, "Ready"), (2, "Rejected")]
    assert resolve_version_dir("triage-gate@latest", home) == home / "registry" / "triage-gate" / "1"
    assert resolve_version_dir("triage-gate@2", home).name == "2"
    with pytest.raises(RegistryError, match="no such version"):
        resolve_version_dir("triage-gate@7", home)


def test_merged_model_is_registered_with_the_adapter(mlflow_server, tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneops.runtime.export import merge_loaded

    merged = merge_loaded(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir,
                          tmp_path / "merged", dtype="bfloat16")
    job = make_job("triage-merged")
    home = tmp_path / "home"
    mv = register_version(job, run_dir=make_run_dir(tmp_path, tiny_adapter_dir, merged=merged), evaluation=PASSED,
                          mlflow_run_id=start_run(mlflow_server, job), tracking_uri=mlflow_server, home=home)
    assert mv.spec.merged.sha256 == directory_digest(merged) and mv.spec.merged.dtype == "bfloat16"
    local = download_version("models:/triage-merged/1", tmp_path / "dl", tracking_uri=mlflow_server)
    assert directory_digest(local / "merged") == mv.spec.merged.sha256
    assert read_model_version(home / "registry" / "triage-merged" / "1").spec.merged == mv.spec.merged


def test_embedded_local_store_without_a_server(tiny_adapter_dir, tmp_path, monkeypatch):
    """No tracking URI anywhere: a sqlite store and mlartifacts/ under TUNEOPS_HOME, a run created for us."""
    monkeypatch.chdir(tmp_path)
    job = make_job("triage-local")
    home = tmp_path / "home"
    mv = register_version(job, run_dir=make_run_dir(tmp_path, tiny_adapter_dir), evaluation=None,
                          mlflow_run_id=None, tracking_uri=None, home=home)
    assert mv.spec.version == 1 and mv.status.phase == "Ready" and mv.status.evaluation is None
    assert mv.spec.registry.tracking_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert any((home / "mlartifacts").rglob("adapter_model.safetensors"))
    assert not (tmp_path / "mlruns").exists()


def test_bad_inputs(tmp_path, tiny_adapter_dir):
    job = make_job("triage-bad")
    with pytest.raises(RegistryError, match="adapter_config.json is missing"):
        register_version(job, run_dir=tmp_path, evaluation=None, mlflow_run_id=None, tracking_uri=None,
                         home=tmp_path)
    with pytest.raises(RegistryError, match="expected NAME@VERSION"):
        resolve_version_dir("nothing-here", tmp_path)
