"""Text metrics and custom evaluators on hand-checkable inputs."""

from __future__ import annotations

import json

import pytest

from tuneops.api.evaluation import CustomEvaluator
from tuneops.runtime.metrics import (
    EvaluatorError, bleu, check_evaluators, chrf, exact_match, is_exact_match, json_valid, rouge_l,
    score_evaluator, text_metrics,
)

REF = '{"category": "login", "severity": "low", "topic": "2FA code"}'


def test_rouge_l_bounds_and_partial_overlap():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert rouge_l(["dog"], ["the cat sat"]) == 0.0
    # LCS "the cat" (2 words): P = 2/2, R = 2/3 -> F1 = 0.8
    assert rouge_l(["the cat"], ["the cat sat"]) == pytest.approx(0.8)


def test_bleu_and_chrf_scale_and_order():
    refs = ["the quick brown fox jumps over the lazy dog"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert chrf(refs, refs) == pytest.approx(100.0)
    close = ["the quick brown fox jumped over the lazy dog"]
    far = ["a completely different sentence here"]
    assert bleu(far, refs) < bleu(close, refs) < 100
    assert chrf(far, refs) < chrf(close, refs) < 100


def test_exact_match_ignores_whitespace_and_json_formatting():
    assert is_exact_match("  hello   world\n", "hello world")
    assert is_exact_match('{"topic":"2FA code","severity":"low","category":"login"}', REF)
    assert not is_exact_match('{"category": "login", "severity": "high", "topic": "2FA code"}', REF)
    assert exact_match([REF, "nope"], [REF, REF]) == 0.5


def test_json_valid_wants_a_structure():
    preds = [REF, "[1, 2]", "Sure! " + REF, '{"a": 1', "42", ""]
    assert json_valid(preds) == pytest.approx(2 / 6)


def test_custom_evaluators():
    preds = [REF, '{"category": "weird", "severity": "low", "topic": "x"}', "not json at all: login"]
    regex = CustomEvaluator(name="severityField", type="regex", pattern=r'"severity":\s*"(low|medium|high)"')
    contains = CustomEvaluator(name="saysLogin", type="contains", pattern="login")
    schema = {
        "type": "object", "required": ["category", "severity", "topic"],
        "properties": {"category": {"enum": ["login", "billing", "api"]}, "severity": {"type": "string"}},
    }
    schema_ev = CustomEvaluator(name="triageSchema", type="jsonSchema", json_schema=json.dumps(schema))
    assert score_evaluator(regex, preds) == pytest.approx(2 / 3)
    assert score_evaluator(contains, preds) == pytest.approx(2 / 3)
    assert score_evaluator(schema_ev, preds) == pytest.approx(1 / 3)
    scores = text_metrics(["rougeL", "exactMatch", "jsonValid"], preds, [REF] * 3, [regex, schema_ev])
    assert set(scores) == {"rougeL", "exactMatch", "jsonValid", "severityField", "triageSchema"}
    assert scores["exactMatch"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        (CustomEvaluator(name="bad", type="regex", pattern="(unclosed"), "evaluators[bad]: pattern is not a valid regex"),
        (CustomEvaluator(name="bad2", type="jsonSchema", json_schema="{nope"), "jsonSchema is not valid JSON"),
        (CustomEvaluator(name="bad3", type="jsonSchema", json_schema='{"type": 12}'), "not a valid JSON Schema"),
    ],
)
def test_bad_evaluators_fail_fast_with_their_name(evaluator, message):
    with pytest.raises(EvaluatorError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        check_evaluators([evaluator])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        text_metrics(["rougeL"], ["a", "b"], ["a"])
