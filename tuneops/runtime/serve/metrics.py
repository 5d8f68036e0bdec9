"""Prometheus metrics. Names follow TGI's where they overlap (`tgi_*`), so one dashboard serves both engines;
what TGI lacks is under `tuneops_*`. TGI's counters have no `_total` suffix (metrics-exporter-prometheus), which
`prometheus_client` would add, so those few counters are rendered by hand in the same text format."""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class _BareCounters:
    """Counters rendered as `name{labels} value` with `# TYPE name counter`, exactly like TGI."""

    def __init__(self, help_text: dict[str, str]) -> None:
        self._help = help_text
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._lock = threading.Lock()
        for name in help_text:
            self._values[name]  # so unlabelled counters render as 0 from the start

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in self._values.items():
                lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
                if not series:
                    lines.append(f"{name} 0")
                for key, value in series.items():
                    labels = ",".join(f'{k}="{v}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


class ServeMetrics:
    """All metrics of one server, in their own registry (several servers can live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.counters = _BareCounters({
            "tgi_request_count": "Requests received",
            "tgi_request_success": "Requests that generated successfully",
            "tgi_request_failure": "Failed requests by error type",
            "tgi_batch_inference_count": "Forward passes by method (prefill/decode)",
            "tgi_batch_inference_success": "Successful forward passes by method",
        })
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting to join the batch", registry=r)
        self.batch_size = Gauge("tgi_batch_current_size", "Sequences in the running batch", registry=r)
        self.batch_next_size = Histogram("tgi_batch_next_size", "Batch size of each forward pass",
                                         buckets=_BATCH, registry=r)
        self.forward_duration = Histogram("tgi_batch_forward_duration", "Forward pass duration (s)", ["method"],
                                          buckets=_SECONDS, registry=r)
        self.request_duration = Histogram("tgi_request_duration", "End-to-end request duration (s)",
                                          buckets=_SECONDS, registry=r)
        self.validation_duration = Histogram("tgi_request_validation_duration", "Validation+tokenisation (s)",
                                             buckets=_SECONDS, registry=r)
        self.queue_duration = Histogram("tgi_request_queue_duration", "Time queued before joining a batch (s)",
                                        buckets=_SECONDS, registry=r)
        self.inference_duration = Histogram("tgi_request_inference_duration", "Time generating (s)",
                                            buckets=_SECONDS, registry=r)
        self.time_per_token = Histogram("tgi_request_mean_time_per_token_duration", "Mean time per token (s)",
                                        buckets=_SECONDS, registry=r)
        self.generated_tokens = Histogram("tgi_request_generated_tokens", "Generated tokens per request",
                                          buckets=_TOKENS, registry=r)
        self.input_length = Histogram("tgi_request_input_length", "Input tokens per request",
                                      buckets=_TOKENS, registry=r)
        self.max_new_tokens = Histogram("tgi_request_max_new_tokens", "Requested max_new_tokens",
                                        buckets=_TOKENS, registry=r)
        self.ttft = Histogram("tuneops_request_time_to_first_token_seconds", "Time to first token (s)",
                              buckets=_SECONDS, registry=r)
        self.tokens_per_second = Histogram("tuneops_request_tokens_per_second", "Output tokens/s per request",
                                           buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500), registry=r)
        self.tokens_in = Counter("tuneops_input_tokens", "Input tokens processed", registry=r)
        self.tokens_out = Counter("tuneops_generated_tokens", "Tokens generated", registry=r)
        self.http_requests = Counter("tuneops_http_requests", "HTTP responses by route and status code",
                                     ["route", "code"], registry=r)
        self.adapter_requests = Counter("tuneops_adapter_requests", "Admitted requests by LoRA adapter",
                                        ["adapter"], registry=r)
        self.in_flight = Gauge("tuneops_requests_in_flight", "Admitted requests (queued + generating)", registry=r)
        self.ready = Gauge("tuneops_ready", "1 when the model is loaded and warm", registry=r)
        self.drift_psi = Gauge("tuneops_drift_psi", "Population stability index vs the reference profile",
                               ["feature"], registry=r)
        self.drift_ks = Gauge("tuneops_drift_ks_statistic", "Two-sample KS statistic of prompt lengths",
                              registry=r)
        self.drift_detected = Gauge("tuneops_drift_detected", "1 when a drift statistic crosses its threshold",
                                    registry=r)
        self.drift_embedding_centroid = Gauge(
            "tuneops_drift_embedding_centroid_distance",
            "Cosine distance between the live and reference sentence-embedding centroids", registry=r)
        self.drift_embedding_outliers = Gauge(
            "tuneops_drift_embedding_outlier_fraction",
            "Share of live prompts farther from the reference centroid than the reference p95", registry=r)
        self.drift_embedding_enabled = Gauge("tuneops_drift_embedding_enabled",
                                             "1 when sentence-embedding drift is measured", registry=r)
        self.drift_embedding_dropped = Counter(
            "tuneops_drift_embedding_dropped", "Prompts not embedded because the embedding queue was full",
            registry=r)

    # called from the engine's worker thread
    def observe_forward(self, method: str, seconds: float, batch_size: int) -> None:
        self.counters.inc("tgi_batch_inference_count", method=method)
        self.counters.inc("tgi_batch_inference_success", method=method)
        self.forward_duration.labels(method).observe(seconds)
        self.batch_next_size.observe(batch_size)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_duration.observe(seconds)

    def set_sizes(self, *, queue: int, batch: int) -> None:
        self.queue_size.set(queue)
        self.batch_size.set(batch)

    def render(self) -> bytes:
        return self.counters.render().encode() + generate_latest(self.registry)
