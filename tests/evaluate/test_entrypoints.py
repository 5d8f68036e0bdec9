"""The contract entry points (evaluate, merge_adapter) with a job whose base model is a local path."""

from __future__ import annotations

from pathlib import Path

import yaml

from tuneops.api import parse_resource
from tuneops.runtime.evaluate import EVALUATION_FILE, evaluate, read_evaluation
from tuneops.runtime.export import merge_adapter

from . import tiny

REPO = Path(__file__).resolve().parents[2]


def tiny_job(base_dir: Path, **evaluation):
    doc = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
    doc["spec"]["baseModel"] = {"family": "llama3", "source": {"path": str(base_dir)}}
    doc["spec"]["evaluation"].update({"maxSamples": 4, "maxNewTokens": 6, **evaluation})
    return parse_resource(doc)


def test_evaluate_entry_point(tiny_base_dir, tiny_adapter_dir, tmp_path):
    job = tiny_job(tiny_base_dir)
    result = evaluate(job, adapter_dir=tiny_adapter_dir, rows=tiny.ticket_rows(6), out_dir=tmp_path / "eval",
                      home=tmp_path)
    assert read_evaluation(tmp_path / "eval" / EVALUATION_FILE) == result
    assert {c.metric for c in result.checks} == {"loss", "jsonValid"}
    assert result.verdict == "Failed"  # a random tiny model cannot write JSON: the jsonValid >= 0.5 rule fails
    assert "exactMatch" in result.tuned and "perplexity" in result.base


def test_disabled_evaluation_is_skipped_without_loading(tmp_path):
    job = tiny_job(tmp_path / "does-not-exist", enabled=False)
    result = evaluate(job, adapter_dir=tmp_path, rows=[], out_dir=tmp_path / "eval")
    assert result.verdict == "Skipped" and read_evaluation(tmp_path / "eval").verdict == "Skipped"


def test_merge_adapter_entry_point(tiny_base_dir, tiny_adapter_dir, tmp_path):
    job = tiny_job(tiny_base_dir)
    out = merge_adapter(job.spec.base_model, tiny_adapter_dir, tmp_path / "merged", "float16", home=tmp_path)
    config = (out / "config.json").read_text()
    assert '"float16"' in config and (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
