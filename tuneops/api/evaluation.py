"""Evaluation and the eval gate, shared by FineTuneJob (what to measure) and ModelVersion (the verdict)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Rule, TuneopsModel, is_set, rules

# Built-in metrics. Loss-like metrics are better when lower.
BuiltinMetric = Literal["loss", "perplexity", "rougeL", "bleu", "chrf", "exactMatch", "jsonValid", "tokensPerSecond"]
BUILTIN_METRICS: tuple[str, ...] = BuiltinMetric.__args__  # type: ignore[attr-defined]
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "latencyMs"})


@rules(
    Rule(
        cel="(self.type == 'regex' || self.type == 'contains') ? has(self.pattern) : true",
        message="regex and contains evaluators need a pattern",
        check=lambda s: s.type not in ("regex", "contains") or s.pattern is not None,
        field=".pattern",
    ),
    Rule(
        cel="self.type == 'jsonSchema' ? has(self.jsonSchema) : true",
        message="a jsonSchema evaluator needs jsonSchema",
        check=lambda s: s.type != "jsonSchema" or s.json_schema is not None,
        field=".jsonSchema",
    ),
)
class CustomEvaluator(TuneopsModel):
    """A scorer over generated answers: fraction of samples that match."""

    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9_]*$", max_length=63)
    type: Literal["regex", "contains", "jsonSchema"]
    pattern: str | None = Field(default=None, max_length=4096, description="Regex, or the substring for contains.")
    json_schema: str | None = Field(default=None, max_length=65536, description="A JSON Schema document, as a string.")


@rules(
    Rule(
        cel="has(self.min) || has(self.max) || has(self.minDeltaVsBase) || has(self.maxDeltaVsBase)"
        " || has(self.maxRatioVsBase)",
        message="a gate rule needs at least one threshold",
        check=lambda s: any(is_set(v) for v in (s.min, s.max, s.min_delta_vs_base, s.max_delta_vs_base,
                                                s.max_ratio_vs_base)),
    ),
)
class GateRule(TuneopsModel):
    """Thresholds for one metric: absolute, or relative to the base model's score on the same prompts."""

    min: float | None = None
    max: float | None = None
    min_delta_vs_base: float | None = Field(default=None, description="tuned - base must be >= this.")
    max_delta_vs_base: float | None = Field(default=None, description="tuned - base must be <= this.")
    max_ratio_vs_base: float | None = Field(default=None, gt=0, description="tuned / base must be <= this.")


def _gate_metrics_known(s: "EvaluationSpec") -> bool:
    known = set(BUILTIN_METRICS) | {e.name for e in s.evaluators}
    return all(k in known for k in s.gate)


@rules(
    Rule(
        cel="!has(self.gate) || self.gate.all(k, k in " + str(list(BUILTIN_METRICS))
        + " || (has(self.evaluators) && self.evaluators.exists(e, e.name == k)))",
        message="gate names a metric that is neither built in (" + ", ".join(BUILTIN_METRICS)
        + ") nor a custom evaluator",
        check=_gate_metrics_known,
        field=".gate",
    ),
)
class EvaluationSpec(TuneopsModel):
    enabled: bool = True
    metrics: list[BuiltinMetric] = Field(default_factory=lambda: ["loss", "perplexity", "rougeL"], max_length=16)
    evaluators: list[CustomEvaluator] = Field(default_factory=list, max_length=16)
    max_samples: int = Field(default=64, gt=0, le=100000, description="Held-out samples to generate for.")
    max_new_tokens: int = Field(default=128, gt=0, le=8192)
    gate: dict[str, GateRule] = Field(
        default_factory=dict, max_length=32,
        description="metric -> thresholds; a failing gate marks the ModelVersion Rejected.")


Verdict = Literal["Passed", "Failed", "Skipped"]


class GateCheck(TuneopsModel):
    metric: str
    base: float | None = None
    tuned: float | None = None
    passed: bool
    reason: str = ""


class EvaluationResult(TuneopsModel):
    """What an evaluation found: both models' scores and the gate verdict."""

    verdict: Verdict
    base: dict[str, float] = Field(default_factory=dict)
    tuned: dict[str, float] = Field(default_factory=dict)
    checks: list[GateCheck] = Field(default_factory=list, max_length=64)
    primary_metric: str | None = None
    score: float | None = Field(default=None, description="The tuned model's primary metric (kubectl column).")
