"""The eval gate: compare the tuned model's scores with thresholds and with the base model's scores.

Pure functions, no ML imports, so the operator-side tools and tests can use them cheaply.

A rule's thresholds are explicit about direction (min/max, minDeltaVsBase/maxDeltaVsBase, maxRatioVsBase);
`LOWER_IS_BETTER` only decides how a change is *described* ("better"/"worse") and which way `is_better` points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tuneops.api.evaluation import LOWER_IS_BETTER, GateCheck, GateRule, Verdict
from tuneops.api.modelversion import ModelVersionPhase


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def is_better(metric: str, tuned: float, base: float) -> bool:
    """True when `tuned` is strictly better than `base` for this metric's direction."""
    return tuned < base if lower_is_better(metric) else tuned > base


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _change(metric: str, base: float, tuned: float) -> str:
    """'0.31 -> 0.44 (+0.13, better)': the words follow the metric's direction."""
    delta = tuned - base
    if delta == 0:
        word = "unchanged"
    else:
        word = "better" if is_better(metric, tuned, base) else "worse"
    return f"{_fmt(base)} -> {_fmt(tuned)} ({delta:+.4g}, {word})"


def check_rule(metric: str, rule: GateRule, base: float | None, tuned: float | None) -> GateCheck:
    """Evaluate every threshold of one rule; the reason lists each threshold and whether it held."""

    def failed(reason: str) -> GateCheck:
        return GateCheck(metric=metric, base=base, tuned=tuned, passed=False, reason=reason)

    if tuned is None:
        return failed(f"{metric} was not measured for the tuned model")
    if math.isnan(tuned):
        # A diverged run (lr far too high) produces NaN loss; NaN compares False everywhere, so say it plainly.
        return failed(f"{metric} of the tuned model is NaN")

    relative = any(v is not None for v in (rule.min_delta_vs_base, rule.max_delta_vs_base, rule.max_ratio_vs_base))
    if relative and (base is None or math.isnan(base)):
        return failed(f"{metric} has relative thresholds but no base score")

    parts: list[str] = []
    ok = True

    def require(holds: bool, text: str) -> None:
        nonlocal ok
        ok = ok and holds
        parts.append(f"{text} {'ok' if holds else 'FAILED'}")

    if rule.min is not None:
        require(tuned >= rule.min, f"{_fmt(tuned)} >= min {_fmt(rule.min)}")
    if rule.max is not None:
        require(tuned <= rule.max, f"{_fmt(tuned)} <= max {_fmt(rule.max)}")
    if base is not None and relative:
        delta = tuned - base
        if rule.min_delta_vs_base is not None:
            require(delta >= rule.min_delta_vs_base, f"delta {delta:+.4g} >= {rule.min_delta_vs_base:+.4g}")
        if rule.max_delta_vs_base is not None:
            require(delta <= rule.max_delta_vs_base, f"delta {delta:+.4g} <= {rule.max_delta_vs_base:+.4g}")
        if rule.max_ratio_vs_base is not None:
            if base <= 0:
                # tuned/base is meaningless (or flips direction) for a non-positive base.
                require(False, f"ratio vs base {_fmt(base)} undefined (base must be > 0)")
            else:
                ratio = tuned / base
                require(ratio <= rule.max_ratio_vs_base, f"ratio {ratio:.4g} <= {_fmt(rule.max_ratio_vs_base)}")

    prefix = f"{metric} {_change(metric, base, tuned)}: " if base is not None else f"{metric} {_fmt(tuned)}: "
    return GateCheck(metric=metric, base=base, tuned=tuned, passed=ok, reason=prefix + "; ".join(parts))


def apply_gate(gate: Mapping[str, GateRule], base: Mapping[str, float],
               tuned: Mapping[str, float]) -> tuple[Verdict, list[GateCheck]]:
    """(verdict, checks): Skipped when there are no rules, Failed when any rule fails, else Passed."""
    checks = [check_rule(metric, rule, base.get(metric), tuned.get(metric)) for metric, rule in gate.items()]
    if not checks:
        return "Skipped", []
    return ("Passed" if all(c.passed for c in checks) else "Failed"), checks


def phase_for_verdict(verdict: Verdict) -> ModelVersionPhase:
    """A failed gate rejects the version (no deployment may promote it); Skipped means no gate was asked for."""
    return "Rejected" if verdict == "Failed" else "Ready"


def summarize(verdict: Verdict, checks: list[GateCheck]) -> str:
    """One line for status.message / MLflow tags."""
    if verdict == "Skipped":
        return "eval gate skipped: no gate rules"
    failed = [c for c in checks if not c.passed]
    if not failed:
        return f"eval gate passed ({len(checks)} rule(s))"
    return "eval gate failed: " + " | ".join(c.reason for c in failed)
