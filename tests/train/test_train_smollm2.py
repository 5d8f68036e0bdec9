"""Real fine-tuning of the packaged SmolLM2-135M-Instruct on the example support-ticket data (CPU).

Each test: ~16 optimizer steps of 4 short conversations (completion-only loss), then held-out loss and
generations are compared with the base model's.
"""

from __future__ import annotations

import json

import pytest

from tests.support.smollm2 import shared_home
from tests.train.helpers import generate_answers, parse_job, small_job, triage_json_fraction
from tuneops.runtime.training_data import load_rows, prepare_training_data
from tuneops.runtime.train import train


def run_training(tmp_path, **overrides):
    job = parse_job(overrides.pop("doc", None) or small_job())
    data = prepare_training_data(job.spec.dataset, out_dir=tmp_path / "run" / "data")
    result = train(job, run_dir=tmp_path / "run", data=data, tracking=None, home=shared_home(), disable_tqdm=True)
    return job, data, result


def assert_learned_the_style(job, data, result, *, quantization=None):
    from peft import PeftModel

    from tuneops.runtime.models import load_model, load_tokenizer

    m = result.metrics
    assert result.steps == result.total_steps == job.spec.training.max_steps
    assert m["final_train_loss"] < 0.6 * m["first_train_loss"], m
    assert m["eval_loss"] < 0.7 * m["initial_eval_loss"], m

    held_out = load_rows(data.validation_path)[:4]
    tokenizer = load_tokenizer(job.spec.base_model, home=shared_home())
    base = load_model(job.spec.base_model, home=shared_home(), quantization=quantization)
    before = triage_json_fraction(generate_answers(base, tokenizer, held_out))
    tuned = PeftModel.from_pretrained(base, str(result.adapter_dir))
    after_answers = generate_answers(tuned, tokenizer, held_out)
    after = triage_json_fraction(after_answers)
    assert after >= 0.8 and after > before, (before, after, after_answers)


@pytest.mark.slow
def test_lora_sft_learns_the_triage_style(smollm2_dir, tmp_path):
    job, data, result = run_training(tmp_path)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.adapter_dir / "COMPLETE").is_file()
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["step"] == result.steps and progress["totalSteps"] == result.total_steps
    assert progress["metrics"]["loss"] > 0 and progress["metrics"]["tokensPerSecond"] > 0
    assert (tmp_path / "run" / "training-curve.png").stat().st_size > 1000
    assert_learned_the_style(job, data, result)


@pytest.mark.slow
def test_qlora_4bit_sft_learns_the_triage_style(smollm2_dir, tmp_path):
    import bitsandbytes as bnb

    doc = small_job()
    doc["spec"]["method"] = "qlora"
    doc["spec"]["quantization"] = {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "float32"}
    job, data, result = run_training(tmp_path, doc=doc)
    assert_learned_the_style(job, data, result, quantization=job.spec.quantization)
    from tuneops.runtime.train import build_model

    quantized = [m for m in build_model(job, home=shared_home()).modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 30 * 7  # every decoder linear of SmolLM2's 30 layers trained in 4-bit
