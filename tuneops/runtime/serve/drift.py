"""Input drift: compare live prompts with a reference profile of the training prompts.

The profile holds only aggregates (prompt-length bins and a sample of lengths, the frequencies of the most
common token ids, and optionally the centroid of the prompts' sentence embeddings with the spread of the
reference around it), never raw text, so it can ship next to the model. Live prompts are profiled in a sliding
window; the monitor reports PSI for prompt length and token distribution, a two-sample KS statistic for prompt
length, and, when the profile has embeddings and the embedding model is installed, the cosine distance between
the live and reference centroids and the fraction of live prompts farther from the reference centroid than 95 %
of the reference prompts. Each statistic has a threshold that raises the `drift` flag. See
docs/monitoring-drift.md."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tuneops.atomic import write_text_atomic

log = logging.getLogger("tuneops.serve")

PROFILE_FILE = "drift_profile.json"
OTHER = -1  # bucket for token ids outside the reference's most common ones
_EPS = 1e-4


@dataclass
class EmbeddingProfile:
    """Where the reference prompts sit in sentence-embedding space: no text, one averaged vector."""

    model: str                  # the embedding model the vectors come from (live prompts must use the same)
    centroid: list[float]       # mean of the prompts' unit embeddings (its norm < 1 measures their spread)
    distance_p50: float         # cosine distance of a reference prompt to the centroid (leave-one-out): median
    distance_p95: float         # ... and 95th percentile: the "outlier" line for live prompts
    prompts: int


@dataclass
class DriftProfile:
    length_edges: list[float]   # bin edges (len = bins + 1); first is 0, last is +inf
    length_probs: list[float]
    length_sample: list[int]    # sorted prompt lengths (sub-sampled) for the KS test
    token_probs: dict[int, float]  # top token ids + OTHER
    prompts: int
    embedding: EmbeddingProfile | None = None  # absent in profiles written before embeddings existed

    def save(self, path: Path) -> Path:
        body = asdict(self)
        body["length_edges"] = [e if math.isfinite(e) else "inf" for e in self.length_edges]
        body["token_probs"] = {str(k): v for k, v in self.token_probs.items()}
        if self.embedding is None:
            del body["embedding"]  # the pre-embedding format, byte for byte
        write_text_atomic(path, json.dumps(body))
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
                embedding=_embedding_from(body.get("embedding")),
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


def build_embedding_profile(vectors: Any, *, model: str) -> EmbeddingProfile:
    """Profile unit sentence embeddings (n, dim) of the reference prompts: their centroid, and how far a
    reference prompt usually is from it. Distances are leave-one-out (each prompt against the centroid of the
    others), so they estimate what an unseen prompt from the same distribution scores, not a flattering
    in-sample figure."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if n < 2:
        raise ValueError("an embedding profile needs at least 2 reference prompts")
    total = v.sum(axis=0)
    others = (total[None, :] - v) / (n - 1)
    cos = (v * others).sum(axis=1) / np.maximum(np.linalg.norm(others, axis=1), 1e-12)
    distances = 1.0 - cos
    return EmbeddingProfile(model=model, centroid=[round(float(x), 7) for x in total / n],
                            distance_p50=round(float(np.quantile(distances, 0.5)), 6),
                            distance_p95=round(float(np.quantile(distances, 0.95)), 6), prompts=n)


def _embedding_from(body: dict | None) -> EmbeddingProfile | None:
    if not body:
        return None
    return EmbeddingProfile(model=str(body["model"]), centroid=[float(x) for x in body["centroid"]],
                            distance_p50=float(body["distance_p50"]), distance_p95=float(body["distance_p95"]),
                            prompts=int(body["prompts"]))


def prompts_from_jsonl(path: Path, roles: tuple[str, ...] = ("system", "user")) -> list[str]:
    """The `roles` texts of canonical `{"messages": [...]}` rows (or `prompt`/`text` fields) in a JSONL file."""
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
                text = "\n".join(m.get("content") or "" for m in row["messages"] if m.get("role") in roles)
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


class EmbeddingDrift:
    """Sentence-embedding drift: live prompts are embedded by a background `EmbeddingWorker` (never on the
    request path) into a sliding window of unit vectors, compared with an `EmbeddingProfile`:

    - centroid_distance: cosine distance between the live window's centroid and the reference centroid (a
      topic shift moves the centroid; a window drawn from the reference stays near `no_drift_baseline`);
    - outlier_fraction: share of live prompts farther from the reference centroid than the reference's p95
      (about 0.05 without drift; a new kind of prompt mixed into normal traffic raises it)."""

    def __init__(self, profile: EmbeddingProfile, embed: Callable[[list[str]], Any], *, window: int = 200,
                 min_samples: int = 30, centroid_threshold: float = 0.1, outlier_threshold: float = 0.25,
                 queue_size: int = 256, batch_size: int = 16, on_drop: Callable[[], None] | None = None,
                 thread_init: Callable[[], None] | None = None) -> None:
        import numpy as np

        from .embeddings import EmbeddingWorker

        self.profile = profile
        centroid = np.asarray(profile.centroid, dtype=np.float32)
        self._norm = float(np.linalg.norm(centroid))
        self._unit = centroid / max(self._norm, 1e-12)
        self.window: deque[Any] = deque(maxlen=window)
        self.min_samples = min_samples
        self.centroid_threshold = centroid_threshold
        self.outlier_threshold = outlier_threshold
        self._lock = threading.Lock()
        self.worker = EmbeddingWorker(embed, self.add, queue_size=queue_size, batch_size=batch_size, on_drop=on_drop,
                                      thread_init=thread_init)

    def submit(self, text: str) -> bool:
        """Queue a prompt for embedding; False (and counted) when the queue is full. Never blocks."""
        return self.worker.submit(text)

    def add(self, vectors: Any) -> None:
        with self._lock:
            self.window.extend(vectors)

    def close(self) -> None:
        self.worker.stop()

    def no_drift_baseline(self, n: int) -> float:
        """The centroid distance a window of n prompts from the reference distribution shows on average:
        its centroid is the reference centroid plus noise of variance (1 - |c|^2) / n."""
        c2 = self._norm ** 2
        return 1.0 - self._norm / math.sqrt(c2 + (1.0 - c2) / max(n, 1)) if self._norm > 0 else 0.0

    def report(self) -> dict[str, Any]:
        import numpy as np

        with self._lock:
            vectors = list(self.window)
        n = len(vectors)
        w = self.worker
        result: dict[str, Any] = {
            "enabled": True, "model": self.profile.model, "window": n, "min_samples": self.min_samples,
            "pending": w.pending, "embedded": w.embedded, "dropped": w.dropped, "failed": w.failed,
            "last_error": w.last_error,
            "thresholds": {"centroid_distance": self.centroid_threshold, "outlier_fraction": self.outlier_threshold},
            "reference": {"prompts": self.profile.prompts, "distance_p50": self.profile.distance_p50,
                          "distance_p95": self.profile.distance_p95},
            "centroid_distance": None, "outlier_fraction": None, "mean_distance": None, "drift": False,
            "reasons": []}
        if n == 0:
            return result
        live = np.stack(vectors)
        mean = live.mean(axis=0)
        centroid_distance = 1.0 - float(mean @ self._unit) / max(float(np.linalg.norm(mean)), 1e-12)
        distances = 1.0 - live @ self._unit
        outliers = float((distances > self.profile.distance_p95).mean())
        result.update(centroid_distance=round(centroid_distance, 6), outlier_fraction=round(outliers, 6),
                      mean_distance=round(float(distances.mean()), 6),
                      no_drift_baseline=round(self.no_drift_baseline(n), 6))
        if n >= self.min_samples:
            if centroid_distance > self.centroid_threshold:
                result["reasons"].append(
                    f"embedding centroid distance {centroid_distance:.3f} > {self.centroid_threshold}")
            if outliers > self.outlier_threshold:
                result["reasons"].append(f"embedding outlier fraction {outliers:.3f} > {self.outlier_threshold} "
                                         f"(prompts beyond the reference p95 distance {self.profile.distance_p95:.3f})")
            result["drift"] = bool(result["reasons"])
        return result


class DriftMonitor:
    """Sliding window of live prompts compared with a `DriftProfile`. Thread-safe.

    `embedding` (optional) adds sentence-embedding drift; without it, `embedding_disabled` says why."""

    def __init__(self, profile: DriftProfile, *, window: int = 200, min_samples: int = 30,
                 psi_threshold: float = 0.25, ks_alpha: float = 0.01, embedding: EmbeddingDrift | None = None,
                 embedding_disabled: str | None = None) -> None:
        self.profile = profile
        self.window: deque[tuple[int, Counter[int]]] = deque(maxlen=window)
        self.min_samples = min_samples
        self.psi_threshold = psi_threshold
        self.ks_alpha = ks_alpha
        self.embedding = embedding
        self.embedding_disabled = embedding_disabled or (None if embedding else "not configured")
        self._lock = threading.Lock()

    def observe(self, input_ids: list[int], text: str | None = None) -> None:
        """Profile one prompt. `text` (what the user wrote) goes to the embedding worker when there is one; it
        is queued in memory only until embedded, never stored."""
        keys = Counter(t if t in self.profile.token_probs else OTHER for t in input_ids)
        with self._lock:
            self.window.append((len(input_ids), keys))
        if self.embedding is not None and text:
            self.embedding.submit(text)

    def close(self) -> None:
        if self.embedding is not None:
            self.embedding.close()

    def report(self) -> dict[str, Any]:
        result = self._token_report()
        if self.embedding is None:
            result["embedding"] = {"enabled": False, "reason": self.embedding_disabled}
        else:
            embedding = result["embedding"] = self.embedding.report()
            result["reasons"] += embedding["reasons"]
            result["drift"] = bool(result["reasons"])
        return result

    def _token_report(self) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------------------
# Building a reference: at registration (from the training prompts) or at server start (from a .jsonl).

def profile_prompts(prompts_path: Path, tokenize: Callable[[str], list[int]], *,
                    embedder: Any = None) -> DriftProfile:
    """The drift profile of a JSONL of training rows: tokens of the system + user texts (what the model reads),
    and, with an `embedder`, the sentence embeddings of the user texts (what users ask; the system prompt is
    the same in every row and would only blur the topic)."""
    profile = build_profile(tokenize(p) for p in prompts_from_jsonl(prompts_path))
    if embedder is not None:
        users = prompts_from_jsonl(prompts_path, roles=("user",))
        profile.embedding = build_embedding_profile(embedder.embed(users), model=embedder.name)
    return profile


def write_training_profile(train_jsonl: Path, tokenizer_dir: Path, out_path: Path, *,
                           embeddings: bool = True) -> DriftProfile:
    """drift_profile.json for a model version: token profile with the tokenizer in `tokenizer_dir` (the
    adapter's, i.e. what the server tokenises with) + embedding profile when the embedding model is installed
    (logged and left out otherwise: the server then reports embedding drift as disabled, with the reason)."""
    from transformers import AutoTokenizer

    from .embeddings import EmbeddingUnavailable, load_embedder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    embedder = None
    if embeddings:
        try:
            embedder = load_embedder()
        except EmbeddingUnavailable as exc:
            log.warning("drift profile without embeddings: %s", exc)
    profile = profile_prompts(train_jsonl, lambda text: list(tokenizer(text)["input_ids"]), embedder=embedder)
    profile.save(out_path)
    return profile
