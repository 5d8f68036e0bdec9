"""Bounded-memory statistics for the manifest and data card: length histograms (a Counter of distinct
lengths, so percentiles are exact), role and turn counts, and a label distribution when answers are JSON
objects (e.g. the triage dataset's category/severity)."""

from __future__ import annotations

from collections import Counter
from itertools import compress
from typing import Any

from .jsonfast import JSONDecodeError, loads

MAX_LABEL_KEYS = 20
MAX_LABEL_VALUES = 50
OTHER = "(other)"


class Distributions:
    def __init__(self) -> None:
        self.chars: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self.role_sequences: Counter[str] = Counter()  # expanded into role and turn counts at the end
        self.labels: dict[str, Counter[str]] = {}

    def add(self, roles: str, chars: int, tokens: int | None, answer: str | None) -> None:
        """`roles`: the first letter of each turn's role ("sua"); `answer`: the last turn if it may be JSON."""
        self.chars[chars] += 1
        if tokens is not None:
            self.tokens[tokens] += 1
        self.role_sequences[roles] += 1
        if answer is not None and roles[-1] == "a":
            self._add_labels(answer)

    def add_many(self, roles: list[str], chars: list[int], answers: dict[int, str],
                 keep: list[bool] | None = None) -> None:
        """`add` for a batch without token counts, for the rows where `keep` (None: all) is true; `answers`
        is sparse, by row index, in order. Counter.update counts in C; labels go in row order (their caps
        depend on it)."""
        for i, answer in answers.items():
            if (keep is None or keep[i]) and roles[i][-1] == "a":
                self._add_labels(answer)
        if keep is not None:
            roles, chars = compress(roles, keep), compress(chars, keep)
        self.chars.update(chars)
        self.role_sequences.update(roles)

    def _add_labels(self, answer: str) -> None:
        try:
            record = loads(answer)
        except (JSONDecodeError, ValueError):
            return
        if not isinstance(record, dict):
            return
        for key, value in record.items():
            if isinstance(value, (str, int, bool)) and len(str(value)) <= 64:
                counter = self.labels.get(key)
                if counter is None:
                    if len(self.labels) >= MAX_LABEL_KEYS:
                        continue
                    counter = self.labels[key] = Counter()
                value = str(value)
                if value not in counter and len(counter) >= MAX_LABEL_VALUES:
                    value = OTHER
                counter[value] += 1

    def to_json(self) -> dict[str, Any]:
        names = {"s": "system", "u": "user", "a": "assistant"}
        roles: Counter[str] = Counter()
        turns: Counter[int] = Counter()
        for sequence, n in self.role_sequences.items():
            turns[len(sequence)] += n
            for letter in sequence:
                roles[names[letter]] += n
        return {
            "charLengths": summarize(self.chars),
            "tokenLengths": summarize(self.tokens) if self.tokens else None,
            "roles": dict(sorted(roles.items())),
            "turnsPerSample": {str(k): v for k, v in sorted(turns.items())},
            # Only keys that look like labels (few distinct values) are worth showing.
            "labels": {k: dict(c.most_common()) for k, c in self.labels.items()
                       if len(c) <= MAX_LABEL_VALUES // 2},
        }


def summarize(lengths: Counter[int], bins: int = 20) -> dict[str, Any]:
    """min/max/mean/percentiles and a fixed-width histogram from a Counter of lengths."""
    total = sum(lengths.values())
    if not total:
        return {"count": 0}
    keys = sorted(lengths)
    lo, hi = keys[0], keys[-1]
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * (-(-(hi - lo + 1) // width))
    for length, n in lengths.items():
        counts[(length - lo) // width] += n
    out: dict[str, Any] = {"count": total, "min": lo, "max": hi,
                           "mean": round(sum(k * n for k, n in lengths.items()) / total, 2)}
    targets = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
    seen, pending = 0, sorted(targets.items(), key=lambda kv: kv[1])
    for length in keys:
        seen += lengths[length]
        while pending and seen >= pending[0][1] * total:
            out[pending.pop(0)[0]] = length
    out["histogram"] = {"edges": [lo + i * width for i in range(len(counts) + 1)], "counts": counts}
    return out
