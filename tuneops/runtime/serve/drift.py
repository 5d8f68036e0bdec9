"""Input drift: compare live prompts with a reference profile of the training prompts.

The profile holds only aggregates (prompt-length bins and a sample of lengths, the frequencies of the most
common token ids), never raw text, so it can ship next to the model. Live prompts are profiled in a sliding
window; the monitor reports PSI for prompt length and token distribution, and a two-sample KS statistic for
prompt length, each with a threshold that raises the `drift` flag."""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

PROFILE_FILE = "drift_profile.json"
OTHER = -1  # bucket for token ids outside the reference's most common ones
_EPS = 1e-4


@dataclass
class DriftProfile:
    length_edges: list[float]   # bin edges (len = bins + 1); first is 0, last is +inf
    length_probs: list[float]
    length_sample: list[int]    # sorted prompt lengths (sub-sampled) for the KS test
    token_probs: dict[int, float]  # top token ids + OTHER
    prompts: int

    def save(self, path: Path) -> Path:
        body = asdict(self)
        body["length_edges"] = [e if math.isfinite(e) else "inf" for e in self.length_edges]
        body["token_probs"] = {str(k): v for k, v in self.token_probs.items()}
        _atomic_write(path, json.dumps(body))
        return path

    @classmethod
    def load(cls, path: Path) -> "DriftProfile":
        try:
            body = json.loads(Path(path).read_text())
            return cls(
                length_edges=[float(e) for e in body["length_edges"]],
                length_probs=[float(p) for p in body["length_probs"]],
                length_sample=[int(n) for n in body["length_sample"]],
                token_probs={int(k): float(v) for k, v in body["token_probs"].items()},
                prompts=int(body["prompts"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a drift profile: {exc}") from exc


def build_profile(token_lists: Iterable[list[int]], *, bins: int = 10, top_tokens: int = 256,
                  sample: int = 2000) -> DriftProfile:
    """Profile tokenised reference prompts: quantile bins of their lengths and their token frequencies."""
    lengths: list[int] = []
    tokens: Counter[int] = Counter()
    for ids in token_lists:
        lengths.append(len(ids))
        tokens.update(ids)
    if len(lengths) < 2:
        raise ValueError("a drift profile needs at least 2 reference prompts")
    lengths.sort()
    cuts = sorted({lengths[min(len(lengths) - 1, int(len(lengths) * q / bins))] for q in range(1, bins)})
    edges = [0.0, *[float(c) for c in cuts if c > 0], math.inf]
    length_probs = _histogram(lengths, edges)
    top = dict(tokens.most_common(top_tokens))
    total = sum(tokens.values())
    token_probs = {tid: n / total for tid, n in top.items()}
    token_probs[OTHER] = max(0.0, 1.0 - sum(token_probs.values()))
    step = max(1, len(lengths) // sample)
    return DriftProfile(edges, length_probs, lengths[::step], token_probs, len(lengths))


def prompts_from_jsonl(path: Path) -> list[str]:
    """User/system texts of canonical `{"messages": [...]}` rows (or `prompt`/`text` fields) in a JSONL file."""
    prompts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
            if "messages" in row:
                text = "\n".join(m.get("content") or "" for m in row["messages"] if m.get("role") in ("system", "user"))
            else:
                text = row.get("prompt") or row.get("text") or ""
            if text:
                prompts.append(text)
    return prompts


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index; > 0.25 is the usual 'significant shift'."""
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, _EPS), max(a, _EPS)
        total += (a - e) * math.log(a / e)
    return total


def ks_statistic(reference: list[int], live: list[int]) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the two empirical CDFs."""
    a, b = sorted(reference), sorted(live)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] <= x:
            i += 1
        while j < len(b) and b[j] <= x:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def ks_critical(n: int, m: int, alpha: float = 0.01) -> float:
    c = math.sqrt(-0.5 * math.log(alpha / 2))
    return c * math.sqrt((n + m) / (n * m))


class DriftMonitor:
    """Sliding window of live prompts compared with a `DriftProfile`. Thread-safe."""

    def __init__(self, profile: DriftProfile, *, window: int = 200, min_samples: int = 30,
                 psi_threshold: float = 0.25, ks_alpha: float = 0.01) -> None:
        self.profile = profile
        self.window: deque[tuple[int, Counter[int]]] = deque(maxlen=window)
        self.min_samples = min_samples
        self.psi_threshold = psi_threshold
        self.ks_alpha = ks_alpha
        self._lock = threading.Lock()

    def observe(self, input_ids: list[int]) -> None:
        keys = Counter(t if t in self.profile.token_probs else OTHER for t in input_ids)
        with self._lock:
            self.window.append((len(input_ids), keys))

    def report(self) -> dict[str, Any]:
        with self._lock:
            items = list(self.window)
        n = len(items)
        result: dict[str, Any] = {"window": n, "min_samples": self.min_samples, "reference_prompts": self.profile.prompts,
                                  "thresholds": {"psi": self.psi_threshold, "ks_alpha": self.ks_alpha},
                                  "psi": {}, "ks": None, "drift": False, "reasons": []}
        if n == 0:
            return result
        lengths = [length for length, _ in items]
        psi_length = psi(self.profile.length_probs, _histogram(lengths, self.profile.length_edges))
        counts: Counter[int] = Counter()
        for _, keys in items:
            counts.update(keys)
        total = sum(counts.values()) or 1
        ids = list(self.profile.token_probs)
        psi_tokens = psi([self.profile.token_probs[i] for i in ids], [counts.get(i, 0) / total for i in ids])
        d = ks_statistic(self.profile.length_sample, lengths)
        critical = ks_critical(len(self.profile.length_sample), n, self.ks_alpha)
        result["psi"] = {"prompt_length": round(psi_length, 6), "tokens": round(psi_tokens, 6)}
        result["ks"] = {"statistic": round(d, 6), "critical": round(critical, 6)}
        if n >= self.min_samples:
            if psi_length > self.psi_threshold:
                result["reasons"].append(f"prompt_length PSI {psi_length:.3f} > {self.psi_threshold}")
            if psi_tokens > self.psi_threshold:
                result["reasons"].append(f"tokens PSI {psi_tokens:.3f} > {self.psi_threshold}")
            if d > critical:
                result["reasons"].append(f"prompt_length KS {d:.3f} > {critical:.3f} (alpha {self.ks_alpha})")
            result["drift"] = bool(result["reasons"])
        return result


def _histogram(values: list[int], edges: list[float]) -> list[float]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        for b in range(len(edges) - 1):
            if edges[b] <= v < edges[b + 1] or (b == len(edges) - 2 and v >= edges[b]):
                counts[b] += 1
                break
    total = len(values) or 1
    return [c / total for c in counts]


def _atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
