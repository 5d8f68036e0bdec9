"""Prometheus metrics of the operator: reconciles, errors, latency, queue depth."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
RECONCILES = Counter("tuneops_operator_reconciles", "Reconciles run, by kind and result (ok|error).",
                     ["kind", "result"], registry=REGISTRY)
ERRORS = Counter("tuneops_operator_reconcile_errors", "Reconciles that raised, by kind and exception type.",
                 ["kind", "error"], registry=REGISTRY)
LATENCY = Histogram("tuneops_operator_reconcile_duration_seconds", "Time per reconcile, by kind.", ["kind"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
CHILDREN = Counter("tuneops_operator_children_created", "Child objects created, by kind.", ["kind"],
                   registry=REGISTRY)
QUEUE_DEPTH = Gauge("tuneops_operator_queue_depth", "Keys waiting in the reconcile queue.", registry=REGISTRY)


@contextmanager
def observe(kind: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        RECONCILES.labels(kind, "error").inc()
        ERRORS.labels(kind, type(exc).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        LATENCY.labels(kind).observe(time.perf_counter() - start)


def serve(port: int, depth: Callable[[], int] | None = None) -> None:
    """Expose /metrics on `port` (0 = off)."""
    if depth is not None:
        QUEUE_DEPTH.set_function(depth)
    if port:
        start_http_server(port, registry=REGISTRY)
