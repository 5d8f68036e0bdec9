"""The training pod's entry point (`python -m tuneops.runtime.train`) end to end: train, evaluate with the gate,
merge, publish to S3 (a local moto server), and `tuneops serve`'s loader fetching the result back."""

from __future__ import annotations

import json

import pytest

from tests.support.s3 import local_s3
from tests.train.helpers import tiny_job, write_job
from tuneops.runtime import checkpoints as ckpt
from tuneops.runtime import remote_artifacts, train
from tuneops.runtime.progress import termination_message


@pytest.fixture
def s3(monkeypatch):
    """A bucket on a moto server on loopback; fsspec/boto3 point at it through the environment."""
    with local_s3(monkeypatch, "models") as (client, _):
        yield client


def test_publish_uploads_the_marker_last_is_idempotent_and_fetch_caches(tmp_path):
    local = tmp_path / "run" / "adapter"
    local.mkdir(parents=True)
    (local / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (local / "adapter_config.json").write_text("{}")
    uri = f"file://{tmp_path / 'bucket' / 'ml' / 'job'}"
    with pytest.raises(remote_artifacts.ArtifactNotReady, match="no COMPLETE marker"):
        remote_artifacts.fetch(uri, home=tmp_path / "home")
    remote_artifacts.publish(uri, {"adapter": local})
    remote_dir = tmp_path / "bucket" / "ml" / "job"
    manifest = json.loads((remote_dir / "COMPLETE").read_text())
    assert sorted(manifest["files"]) == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    first = (remote_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    remote_artifacts.publish(uri, {"adapter": local})  # same files: nothing is uploaded again
    assert (remote_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == first

    cached = remote_artifacts.fetch(uri, home=tmp_path / "home")
    assert cached.parent == tmp_path / "home" / "cache" / "artifacts"
    assert (cached / "adapter" / "adapter_model.safetensors").read_bytes() == b"w" * 100
    (remote_dir / "adapter" / "adapter_model.safetensors").unlink()  # a cached copy is never re-downloaded
    assert remote_artifacts.fetch(uri, home=tmp_path / "home") == cached

    (local / "adapter_model.safetensors").write_bytes(b"v" * 100)  # new content: a new cache entry
    remote_artifacts.publish(uri, {"adapter": local})
    assert remote_artifacts.fetch(uri, home=tmp_path / "home") != cached


def test_checkpoint_uri_from_the_operator_wins_over_the_spec(tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.CHECKPOINT_URI_ENV, raising=False)
    assert ckpt.remote_checkpoints(None, "job") is None
    embedded = ckpt.remote_checkpoints(f"file://{tmp_path}/ckpt", "job")
    assert embedded.uri == f"file://{tmp_path}/ckpt/job"
    monkeypatch.setenv(ckpt.CHECKPOINT_URI_ENV, f"file://{tmp_path}/ckpt/ml/job/")
    in_pod = ckpt.remote_checkpoints(f"file://{tmp_path}/ckpt", "job")
    assert in_pod.uri == f"file://{tmp_path}/ckpt/ml/job" and in_pod.root == f"{tmp_path}/ckpt/ml/job"


@pytest.mark.slow
def test_pod_entry_evaluates_publishes_to_s3_and_serve_loads_it(tiny_llama_dir, tmp_path, monkeypatch, s3):
    doc = tiny_job(tiny_llama_dir, maxSteps=2, logEverySteps=1, saveEverySteps=2)
    doc["spec"]["evaluation"].update({"maxSamples": 2, "maxNewTokens": 4, "metrics": ["loss"],
                                      "gate": {"loss": {"max": 1000.0}}})
    doc["spec"]["output"]["mergeAdapter"] = True
    doc["spec"]["storage"] = {"output": "s3://models/out"}
    name = doc["metadata"]["name"]
    monkeypatch.setenv("TUNEOPS_OUTPUT_URI", f"s3://models/out/ml/{name}/")  # what the operator passes
    monkeypatch.delenv(ckpt.CHECKPOINT_URI_ENV, raising=False)
    phases = []

    class Recorder(train.ProgressReporter):
        def update(self, **fields):
            if "phase" in fields:
                phases.append(fields["phase"])
            return super().update(**fields)

    monkeypatch.setattr(train, "ProgressReporter", Recorder)
    spec = write_job(doc, tmp_path / "job.yaml")
    out = tmp_path / "output"
    assert train.main(["--spec", str(spec), "--output", str(out), "--home", str(tmp_path / "home"),
                       "--no-tracking"]) == 0

    result = json.loads((out / "result.json").read_text())
    assert result["phase"] == "Succeeded", result
    assert result["adapterUri"] == f"s3://models/out/ml/{name}/adapter"
    assert result["mergedUri"] == f"s3://models/out/ml/{name}/merged"
    assert result["evaluation"]["verdict"] == "Passed"
    assert phases.index("Evaluating") > phases.index("Running") and phases[-1] == "Succeeded"
    assert len(termination_message(result).encode()) < 4096 and json.loads(termination_message(result))

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix=f"out/ml/{name}/")["Contents"]}
    manifest = json.loads(s3.get_object(Bucket="models", Key=f"out/ml/{name}/COMPLETE")["Body"].read())
    assert {f"out/ml/{name}/{k}" for k in manifest["files"]} | {f"out/ml/{name}/COMPLETE"} == keys
    assert f"out/ml/{name}/adapter/adapter_model.safetensors" in keys
    assert f"out/ml/{name}/merged/config.json" in keys and f"out/ml/{name}/job.yaml" in keys

    from tuneops.runtime.serve.loader import load

    serve_home = tmp_path / "serve-home"
    loaded = load(result["adapterUri"], home=serve_home)  # merged/ is preferred when present
    cached = serve_home / "cache" / "artifacts"
    assert loaded.directory.parent == cached and loaded.family == "llama3"
    # The adapter path (base model from job.yaml): the published folder without merged/.
    import shutil

    adapter_only = tmp_path / "adapter-only"
    shutil.copytree(loaded.directory, adapter_only, ignore=shutil.ignore_patterns("merged"))
    loaded = load(str(adapter_only), home=serve_home)
    assert loaded.family == "llama3" and loaded.model.config.vocab_size > 0
