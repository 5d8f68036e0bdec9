"""Slow: the real SmolLM2-135M-Instruct (materialised once from the packaged GGUF)."""

from __future__ import annotations

import math

import pytest

from tuneops.runtime.evaluate import Sample, generate
from tuneops.runtime.export import load_adapted, load_merged, merge_loaded

pytestmark = pytest.mark.slow

SYSTEM = 'You triage support tickets. Answer with JSON only: {"category", "severity", "topic"}.'
TICKETS = [
    "I can't log in, the 2FA code never arrives.", "Invoice #443 was charged twice.", "The API returns 500 errors.",
    "Password reset link expired.", "Requests time out after 30 seconds.", "Please refund my last payment.",
    "My account is locked.", "Webhook deliveries are failing.", "Wrong VAT on the invoice.", "SSO login loops.",
    "Rate limit hit far too early.", "Card declined on renewal.", "How do I rotate my API key?",
    "The dashboard is blank after login.", "Export to CSV is broken.", "Billing address cannot be changed.",
    "Latency spikes every hour.", "I was logged out repeatedly.", "Coupon code is not applied.",
    "The SDK throws a timeout error.",
]


def _random_lora(base_dir, out_dir):
    """A LoRA adapter with small random B matrices: it changes the answers without destroying the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(out_dir)
    return out_dir


def test_merged_smollm2_generates_the_same_greedy_tokens(smollm2_dir, tmp_path):
    """20 prompts, 8 greedy tokens each: base+adapter and the merged export agree token for token (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    samples = [Sample(prompt=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}], reference="")
               for t in TICKETS]
    adapter = _random_lora(smollm2_dir, tmp_path / "adapter")
    adapted = load_adapted(AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32), adapter).eval()
    expected = generate(adapted, tokenizer, samples, max_new_tokens=8, batch_size=20)
    with adapted.disable_adapter():
        base = generate(adapted, tokenizer, samples, max_new_tokens=8, batch_size=20)
    assert expected.token_ids != base.token_ids, "the adapter must change some answers, or this proves nothing"
    del adapted

    merged_dir = merge_loaded(AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32), adapter,
                              tmp_path / "merged", dtype="float32", tokenizer=tokenizer)
    merged = load_merged(merged_dir).eval()
    got = generate(merged, AutoTokenizer.from_pretrained(merged_dir), samples, max_new_tokens=8, batch_size=20)
    assert len(got.token_ids) == 20 and all(got.token_ids)
    assert got.token_ids == expected.token_ids


# ---------------------------------------------------------------------------------------------------------
# End to end: train briefly (the training engineer's trainer), evaluate base vs tuned, gate, register.

def _job(tmp_path, **training):
    from tests.train.helpers import parse_job, small_job

    doc = small_job(**training)
    # Bounded for CPU CI: 8 held-out samples, answers are ~25 tokens of JSON.
    doc["spec"]["evaluation"].update({"maxSamples": 8, "maxNewTokens": 32})
    return parse_job(doc)


def _train_and_evaluate(tmp_path, job):
    from tests.support.smollm2 import shared_home
    from tuneops.runtime.evaluate import evaluate, load_rows
    from tuneops.runtime.train import train
    from tuneops.runtime.training_data import prepare_training_data

    run = tmp_path / "run"
    data = prepare_training_data(job.spec.dataset, out_dir=run / "data")
    trained = train(job, run_dir=run, data=data, tracking=None, home=shared_home(), disable_tqdm=True)
    held_out = data.test_path if data.test_path.is_file() and data.test_path.stat().st_size else data.validation_path
    result = evaluate(job, adapter_dir=trained.adapter_dir, rows=load_rows(held_out), out_dir=run / "eval",
                      home=shared_home())
    return run, trained, result


def test_tuned_smollm2_beats_base_and_passes_the_gate(smollm2_dir, mlflow_server, tmp_path):
    from tuneops.runtime.registry import register_version
    from tuneops.runtime.report import format_table, write_report

    job = _job(tmp_path)
    assert set(job.spec.evaluation.gate) == {"loss", "jsonValid"}  # the example's gate, unchanged
    run, trained, result = _train_and_evaluate(tmp_path, job)
    print(format_table(result))
    # the verdict agrees with the numbers it was computed from
    assert result.tuned["loss"] < result.base["loss"]
    assert result.tuned["jsonValid"] >= 0.5 and result.tuned["jsonValid"] > result.base["jsonValid"]
    assert result.tuned["rougeL"] > result.base["rougeL"]
    assert result.verdict == "Passed" and all(c.passed for c in result.checks)

    files = write_report(run, result, history=trained.log_history)
    assert files.curves is not None and files.comparison is not None
    mv = register_version(job, run_dir=run, evaluation=result, mlflow_run_id=None, tracking_uri=mlflow_server,
                          home=tmp_path / "home")
    assert mv.status.phase == "Ready" and mv.spec.evaluation.verdict == "Passed"


def test_diverged_run_fails_the_gate(smollm2_dir, tmp_path):
    """lr 1.0 for a few steps wrecks the model: held-out loss rises above the base's, no valid JSON."""
    from tuneops.runtime.gate import phase_for_verdict

    job = _job(tmp_path, learningRate=1.0, maxSteps=4, maxGradNorm=1000.0)
    _, _, result = _train_and_evaluate(tmp_path, job)
    checks = {c.metric: c for c in result.checks}
    assert result.verdict == "Failed" and phase_for_verdict(result.verdict) == "Rejected"
    assert not checks["loss"].passed
    assert result.tuned.get("loss", math.inf) > result.base["loss"]  # a NaN/inf loss is left out of the dict
