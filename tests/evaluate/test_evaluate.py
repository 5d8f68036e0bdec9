"""Base-vs-tuned evaluation on a tiny random Llama + LoRA adapter (fast; no real model)."""

from __future__ import annotations

import json
import math

import pytest

from tuneops.api.evaluation import EvaluationSpec
from tuneops.runtime.evaluate import (
    EvaluationDataError, Sample, assistant_loss, compare, generate, load_rows, read_evaluation, to_samples,
)
from tuneops.runtime.export import load_adapted

from . import tiny


@pytest.fixture(scope="module")
def tokenizer(tiny_base_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base_dir)


@pytest.fixture(scope="module")
def adapted(tiny_base_dir, tiny_adapter_dir):
    from transformers import AutoModelForCausalLM

    return load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir).eval()


def test_loss_counts_only_answer_tokens(adapted, tokenizer):
    samples = to_samples(tiny.ticket_rows(4))
    loss, count = assistant_loss(adapted, tokenizer, samples, batch_size=3)
    answers = sum(len(tokenizer(s.reference + "<|im_end|>", add_special_tokens=False)["input_ids"]) for s in samples)
    assert count == answers
    # a random model over this vocabulary: loss is near ln(vocab)
    assert 0.5 * math.log(len(tokenizer)) < loss < 2 * math.log(len(tokenizer))


def test_loss_is_independent_of_batching_and_padding(adapted, tokenizer):
    samples = to_samples(tiny.ticket_rows(5))
    one, _ = assistant_loss(adapted, tokenizer, samples, batch_size=1)
    five, _ = assistant_loss(adapted, tokenizer, samples, batch_size=5)
    assert one == pytest.approx(five, rel=1e-5)


def test_batched_left_padded_generation_equals_one_by_one(adapted, tokenizer):
    rows = tiny.ticket_rows(6)
    rows[1]["messages"][1]["content"] += " and a much longer description so the prompts differ in length"
    samples = to_samples(rows)
    side = tokenizer.padding_side
    batched = generate(adapted, tokenizer, samples, max_new_tokens=12, batch_size=6)
    single = generate(adapted, tokenizer, samples, max_new_tokens=12, batch_size=1)
    assert batched.texts == single.texts
    assert tokenizer.padding_side == side  # restored for training/loss code that pads on the right
    assert batched.new_tokens > 0 and batched.seconds > 0


def test_compare_base_vs_tuned_writes_results(adapted, tokenizer, tmp_path):
    spec = EvaluationSpec.model_validate({
        "metrics": ["loss", "perplexity", "rougeL", "bleu", "chrf", "exactMatch", "jsonValid"],
        "evaluators": [{"name": "hasBrace", "type": "contains", "pattern": "{"}],
        "maxSamples": 5, "maxNewTokens": 8,
        "gate": {"loss": {"maxRatioVsBase": 100.0}, "jsonValid": {"min": 0.5}},
    })
    result = compare(adapted, tokenizer, tiny.ticket_rows(9), spec, out_dir=tmp_path, batch_size=4)
    for scores in (result.base, result.tuned):
        assert {"loss", "perplexity", "rougeL", "bleu", "chrf", "exactMatch", "jsonValid", "hasBrace",
                "tokensPerSecond", "latencyMs"} <= set(scores)
        assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    # the adapter changes the weights, so the two models must score differently
    assert result.base["loss"] != result.tuned["loss"]
    # a random tiny model never writes valid JSON: the jsonValid rule fails, the loss rule passes
    assert result.verdict == "Failed"
    assert [c.passed for c in result.checks] == [True, False]
    assert result.primary_metric == "loss" and result.score == result.tuned["loss"]
    assert read_evaluation(tmp_path) == result
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and samples[0]["reference"].startswith("{")


def test_compare_is_deterministic(adapted, tokenizer):
    spec = EvaluationSpec(metrics=["loss", "rougeL"], max_samples=3, max_new_tokens=6)
    a = compare(adapted, tokenizer, tiny.ticket_rows(3), spec)
    b = compare(adapted, tokenizer, tiny.ticket_rows(3), spec)
    assert a.tuned["loss"] == b.tuned["loss"] and a.tuned["rougeL"] == b.tuned["rougeL"]
    assert a.verdict == "Skipped"


def test_bad_rows_name_the_row(tmp_path):
    with pytest.raises(EvaluationDataError, match=r"row 1: messages\[1\]: the last message must be an assistant"):
        to_samples([tiny.ticket_rows(1)[0], {"messages": [{"role": "user", "content": "hi"},
                                                          {"role": "user", "content": "x"}]}])
    with pytest.raises(EvaluationDataError, match="row 0: messages: must be a non-empty list"):
        to_samples([{"text": "x"}])
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps(tiny.ticket_rows(1)[0]) + "\n{oops\n")
    with pytest.raises(EvaluationDataError, match=r"test.jsonl:2: not valid JSON"):
        load_rows(bad)
    assert to_samples(tiny.ticket_rows(5), 2) == to_samples(tiny.ticket_rows(2))
    assert isinstance(to_samples(tiny.ticket_rows(1))[0], Sample)
