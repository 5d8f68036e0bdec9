"""`tuneops run`: the embedded pipeline end to end (tiny model for speed; the example spec otherwise)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.train.helpers import tiny_job, write_job
from tuneops.cli import main


def last_summary(stdout: str) -> dict:
    """The JSON summary `tuneops run` prints last (the Trainer prints its log lines before it)."""
    return json.loads(stdout[stdout.rindex('{\n  "runDir"'):])


def pipeline_doc(tiny_llama_dir, **evaluation):
    doc = tiny_job(tiny_llama_dir, maxSteps=4, logEverySteps=2, saveEverySteps=2)
    doc["spec"]["evaluation"].update({"maxSamples": 3, "maxNewTokens": 6, **evaluation})
    return doc


@pytest.mark.slow
def test_run_registers_a_model_version(tiny_llama_dir, tmp_path, capsys):
    doc = pipeline_doc(tiny_llama_dir, metrics=["loss", "perplexity"], gate={"loss": {"max": 1000.0}})
    spec = write_job(doc, tmp_path / "job.yaml")
    assert main(["run", str(spec), "--home", str(tmp_path / "home")]) == 0
    out = last_summary(capsys.readouterr().out)
    assert out["steps"] == ["validate", "prepare data", "train", "evaluate", "export", "register"]
    assert out["verdict"] == "Passed" and out["modelVersion"]
    versions = list((tmp_path / "home" / "registry").rglob("modelversion.yaml"))
    assert len(versions) == 1
    mv = yaml.safe_load(versions[0].read_text())
    assert mv["kind"] == "ModelVersion"
    # The drift reference `tuneops serve` reads, from the training prompts (embeddings included).
    assert "centroid" in json.loads((versions[0].parent / "drift_profile.json").read_text())["embedding"]
    run_dir = tmp_path / "home" / "runs" / doc["metadata"]["name"]
    assert (run_dir / "merged").is_dir() and (run_dir / "eval").is_dir()
    assert (tmp_path / "home" / "mlflow.db").is_file()  # the embedded MLflow store
    assert json.loads((run_dir / "result.json").read_text())["phase"] == "Succeeded"


@pytest.mark.slow
def test_a_failed_gate_stops_before_register(tiny_llama_dir, tmp_path, capsys):
    doc = pipeline_doc(tiny_llama_dir, metrics=["loss", "jsonValid"], gate={"jsonValid": {"min": 0.99}})
    doc["spec"]["output"]["mergeAdapter"] = False
    spec = write_job(doc, tmp_path / "job.yaml")
    assert main(["run", str(spec), "--home", str(tmp_path / "home")]) == 1
    captured = capsys.readouterr()
    assert "evaluation gate failed: no ModelVersion registered" in captured.err
    assert last_summary(captured.out)["verdict"] == "Failed"
    assert not (tmp_path / "home" / "registry").exists() or not list((tmp_path / "home" / "registry").rglob("*.yaml"))


def test_invalid_spec_names_the_field(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    doc = yaml.safe_load(open("examples/smollm2-lora.yaml"))
    doc["spec"]["lora"]["r"] = 0
    spec.write_text(yaml.safe_dump(doc))
    assert main(["run", str(spec), "--home", str(tmp_path / "home")]) == 2
    assert "spec.lora.r" in capsys.readouterr().err
