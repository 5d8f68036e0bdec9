"""Building small, fast FineTuneJobs on the example data for the training tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from tuneops.api import parse_resource

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "smollm2-lora.yaml"


def example_doc() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def small_job(**training: Any):
    """The embedded example, shortened for CPU tests; `training` overrides spec.training fields (camelCase)."""
    doc = copy.deepcopy(example_doc())
    doc["spec"]["dataset"]["source"] = str(REPO / "examples" / "data" / "support-tickets.jsonl")
    doc["spec"]["dataset"]["split"] = {"validation": 0.05, "seed": 42}
    doc["spec"]["training"].update({"maxSteps": 16, "batchSize": 4, "learningRate": 1e-3, "warmupRatio": 0.0,
                                    "logEverySteps": 4, "maxSeqLength": 256})
    doc["spec"]["training"].update(training)
    return doc


def parse_job(doc: dict[str, Any]):
    return parse_resource(doc)


def write_job(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def triage_json_fraction(texts: list[str]) -> float:
    """Fraction of answers that are exactly the taught style: a JSON object with category/severity/topic."""
    good = 0
    for text in texts:
        try:
            obj = json.loads(text.strip())
        except json.JSONDecodeError:
            continue
        good += isinstance(obj, dict) and set(obj) == {"category", "severity", "topic"}
    return good / len(texts)


def generate_answers(model, tokenizer, rows: list[dict], max_new_tokens: int = 32) -> list[str]:
    import torch

    answers = []
    model.eval()
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


def tiny_job(model_dir: Path, **training: Any) -> dict[str, Any]:
    """small_job() on a tiny random llama3-family model: seconds per run, for mechanics (resume, DDP,
    tracking), not for quality."""
    doc = small_job(**{"learningRate": 3e-3, **training})
    doc["spec"]["baseModel"] = {"family": "llama3", "source": {"path": str(model_dir)}}
    return doc
