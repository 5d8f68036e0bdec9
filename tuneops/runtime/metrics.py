"""Generation metrics over (prediction, reference) pairs, computed locally with real libraries.

Scales: rougeL, exactMatch, jsonValid and custom evaluators are fractions in [0, 1]; bleu and chrf keep
sacrebleu's conventional 0-100 scale (what papers and dashboards report). Never `evaluate.load()`: it fetches
metric scripts from a hub, and pods have no network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from tuneops.api.evaluation import CustomEvaluator

# Metrics computed from generated text (the others — loss, perplexity — come from a forward pass).
GENERATION_METRICS = frozenset({"rougeL", "bleu", "chrf", "exactMatch", "jsonValid", "tokensPerSecond"})


class EvaluatorError(ValueError):
    """A custom evaluator declared in the spec cannot run (bad regex, bad JSON Schema)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"spec.evaluation.evaluators[{name}]: {message}")
        self.name = name


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score's tokenizer: lowercase alphanumeric words)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _mean([scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)])


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU, 0-100 (sacrebleu defaults: 13a tokenizer, exponential smoothing)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF, 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def _parse_json(text: str) -> Any:
    """The parsed value, or raise ValueError. Strict: the whole answer must be the JSON document."""
    return json.loads(text.strip())


def _normalise(text: str) -> str:
    return " ".join(text.split())


def is_exact_match(prediction: str, reference: str) -> bool:
    """Whitespace-insensitive equality; for JSON answers, equality of the parsed values (key order and
    spacing are formatting, not content)."""
    if _normalise(prediction) == _normalise(reference):
        return True
    try:
        return _parse_json(prediction) == _parse_json(reference)
    except ValueError:
        return False


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    return _mean([float(is_exact_match(p, r)) for p, r in zip(predictions, references)])


def is_json_structure(prediction: str) -> bool:
    """The answer is one JSON object or array (a structured answer; a bare number or string is not)."""
    try:
        return isinstance(_parse_json(prediction), (dict, list))
    except ValueError:
        return False


def json_valid(predictions: Sequence[str]) -> float:
    return _mean([float(is_json_structure(p)) for p in predictions])


@lru_cache(maxsize=64)
def _schema_validator(name: str, schema_text: str):
    import jsonschema

    try:
        schema = json.loads(schema_text)
    except ValueError as exc:
        raise EvaluatorError(name, f"jsonSchema is not valid JSON: {exc}") from None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise EvaluatorError(name, f"jsonSchema is not a valid JSON Schema: {exc.message}") from None
    return cls(schema)


def evaluator_matcher(evaluator: CustomEvaluator) -> Callable[[str], bool]:
    """A predicate over one generated answer. Raises EvaluatorError for a bad pattern/schema up front."""
    if evaluator.type == "regex":
        try:
            pattern = re.compile(evaluator.pattern or "")
        except re.error as exc:
            raise EvaluatorError(evaluator.name, f"pattern is not a valid regex: {exc}") from None
        return lambda text: pattern.search(text) is not None
    if evaluator.type == "contains":
        needle = evaluator.pattern or ""
        return lambda text: needle in text
    validator = _schema_validator(evaluator.name, evaluator.json_schema or "")

    def matches_schema(text: str) -> bool:
        try:
            value = _parse_json(text)
        except ValueError:
            return False
        return validator.is_valid(value)

    return matches_schema


def check_evaluators(evaluators: Sequence[CustomEvaluator]) -> None:
    """Fail fast (before any model is loaded) on an evaluator that cannot run."""
    for evaluator in evaluators:
        evaluator_matcher(evaluator)


def score_evaluator(evaluator: CustomEvaluator, predictions: Sequence[str]) -> float:
    """Fraction of answers the evaluator accepts."""
    matches = evaluator_matcher(evaluator)
    return _mean([float(matches(p)) for p in predictions])


_TEXT_METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "rougeL": rouge_l,
    "bleu": bleu,
    "chrf": chrf,
    "exactMatch": exact_match,
    "jsonValid": lambda preds, _refs: json_valid(preds),
}


def text_metrics(names: Sequence[str], predictions: Sequence[str], references: Sequence[str],
                 evaluators: Sequence[CustomEvaluator] = ()) -> dict[str, float]:
    """The requested text metrics plus every custom evaluator, by name."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scores = {name: _TEXT_METRICS[name](predictions, references) for name in names if name in _TEXT_METRICS}
    for evaluator in evaluators:
        scores[evaluator.name] = score_evaluator(evaluator, predictions)
    return scores
