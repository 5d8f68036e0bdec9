"""Table tests for the eval gate: every threshold kind, both metric directions, missing and broken scores."""

from __future__ import annotations

import math

import pytest

from tuneops.api.evaluation import EvaluationSpec, GateRule
from tuneops.runtime.gate import apply_gate, check_rule, is_better, phase_for_verdict, summarize

R = GateRule


@pytest.mark.parametrize(
    ("metric", "rule", "base", "tuned", "passed", "reason_has"),
    [
        # absolute thresholds
        ("rougeL", R(min=0.3), None, 0.31, True, ">= min 0.3 ok"),
        ("rougeL", R(min=0.3), None, 0.29, False, ">= min 0.3 FAILED"),
        ("rougeL", R(min=0.3), None, 0.3, True, "ok"),  # boundary is inclusive
        ("loss", R(max=1.5), None, 1.2, True, "<= max 1.5 ok"),
        ("loss", R(max=1.5), None, 1.6, False, "<= max 1.5 FAILED"),
        ("jsonValid", R(min=0.5, max=1.0), None, 1.0, True, "ok"),
        # relative: rougeL >= base + 0.05
        ("rougeL", R(min_delta_vs_base=0.05), 0.31, 0.44, True, "+0.13, better"),
        ("rougeL", R(min_delta_vs_base=0.05), 0.31, 0.33, False, "delta +0.02 >= +0.05 FAILED"),
        # relative: loss must drop by at least 0.1 (negative delta)
        ("loss", R(max_delta_vs_base=-0.1), 2.0, 1.5, True, "-0.5, better"),
        ("loss", R(max_delta_vs_base=-0.1), 2.0, 1.95, False, "FAILED"),
        # ratio: tuned loss must not be worse than base
        ("loss", R(max_ratio_vs_base=1.0), 2.0, 1.8, True, "ratio 0.9 <= 1 ok"),
        ("loss", R(max_ratio_vs_base=1.0), 2.0, 2.2, False, "ratio 1.1 <= 1 FAILED"),
        ("perplexity", R(max_ratio_vs_base=1.0), 7.0, 9.0, False, "worse"),
        ("loss", R(max_ratio_vs_base=1.0), 0.0, 0.1, False, "undefined"),
        # direction words follow LOWER_IS_BETTER
        ("loss", R(max=10), 2.0, 3.0, True, "+1, worse"),
        ("exactMatch", R(min=0), 0.5, 0.25, True, "-0.25, worse"),
        ("exactMatch", R(min=0), 0.5, 0.5, True, "unchanged"),
        # several thresholds in one rule: all must hold
        ("rougeL", R(min=0.2, min_delta_vs_base=0.0), 0.1, 0.15, False, ">= min 0.2 FAILED"),
        # broken runs
        ("loss", R(max_ratio_vs_base=1.0), 2.0, math.nan, False, "is NaN"),
        ("loss", R(max_ratio_vs_base=1.0), 2.0, math.inf, False, "FAILED"),
        ("rougeL", R(min=0.1), 0.2, None, False, "not measured"),
        ("rougeL", R(min_delta_vs_base=0.0), None, 0.2, False, "no base score"),
    ],
)
def test_check_rule(metric, rule, base, tuned, passed, reason_has):
    check = check_rule(metric, rule, base, tuned)
    assert check.passed is passed
    assert reason_has in check.reason
    assert check.reason.startswith(metric)


def test_verdicts():
    gate = {"loss": R(max_ratio_vs_base=1.0), "rougeL": R(min_delta_vs_base=0.05)}
    base = {"loss": 2.0, "rougeL": 0.3}
    assert apply_gate(gate, base, {"loss": 1.5, "rougeL": 0.4})[0] == "Passed"
    verdict, checks = apply_gate(gate, base, {"loss": 1.5, "rougeL": 0.31})
    assert verdict == "Failed"
    assert [c.passed for c in checks] == [True, False]
    assert apply_gate({}, base, {"loss": 9.9}) == ("Skipped", [])


def test_verdict_drives_phase_and_summary():
    assert phase_for_verdict("Failed") == "Rejected"
    assert phase_for_verdict("Passed") == "Ready"
    assert phase_for_verdict("Skipped") == "Ready"
    verdict, checks = apply_gate({"jsonValid": R(min=0.5)}, {}, {"jsonValid": 0.25})
    assert summarize(verdict, checks).startswith("eval gate failed: jsonValid 0.25")
    assert "passed" in summarize(*apply_gate({"jsonValid": R(min=0.5)}, {}, {"jsonValid": 0.75}))


def test_gate_from_spec_yaml_shape():
    spec = EvaluationSpec.model_validate({"gate": {"loss": {"maxRatioVsBase": 1.0}, "jsonValid": {"min": 0.5}}})
    verdict, checks = apply_gate(spec.gate, {"loss": 3.0, "jsonValid": 0.0}, {"loss": 1.0, "jsonValid": 0.9})
    assert verdict == "Passed" and len(checks) == 2


def test_is_better_direction():
    assert is_better("loss", 1.0, 2.0) and not is_better("loss", 2.0, 1.0)
    assert is_better("rougeL", 0.5, 0.4) and not is_better("perplexity", 9.0, 3.0)
