"""OpenTelemetry spans per request: `tokenize` (validation), `queue` (waiting for a batch slot) and
`generate` (in the batch), children of one `request` span. Exported over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set and the exporter is installed; otherwise the API is a no-op. The queue and
generate spans are recorded when the request ends, with the timestamps the worker thread measured."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger("tuneops.serve")

try:
    from opentelemetry import trace
except ImportError:  # tracing is optional
    trace = None  # type: ignore[assignment]


def configure_exporter() -> bool:
    """Install an OTLP/HTTP exporter if an endpoint is configured. Returns True when spans are exported."""
    if trace is None or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is missing")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                       "tuneops-serve")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def _tracer() -> Any:
    return trace.get_tracer("tuneops.serve") if trace is not None else None




def record_request(request_id: str, seq: Any, *, tokenize_s: float, outcome: str) -> None:
    tracer = _tracer()
    if tracer is None:
        return
    end = time.monotonic()
    offset = time.time_ns() - int(end * 1e9)  # one offset, so spans nest exactly

    def _ns(monotonic_s: float) -> int:  # a time.monotonic() reading as wall-clock ns (span timestamps)
        return offset + int(monotonic_s * 1e9)

    start = seq.enqueued_at - tokenize_s
    root = tracer.start_span("request", start_time=_ns(start), attributes={
        "tuneops.request_id": request_id, "tuneops.input_tokens": len(seq.input_ids),
        "tuneops.generated_tokens": len(seq.generated), "tuneops.outcome": outcome})
    context = trace.set_span_in_context(root)
    tracer.start_span("tokenize", context=context, start_time=_ns(start)).end(end_time=_ns(seq.enqueued_at))
    began = seq.started_at or end
    tracer.start_span("queue", context=context, start_time=_ns(seq.enqueued_at)).end(end_time=_ns(began))
    if seq.started_at is not None:
        tracer.start_span("generate", context=context, start_time=_ns(began),
                          attributes={"tuneops.ttft_s": (seq.first_token_at or end) - seq.enqueued_at}
                          ).end(end_time=_ns(end))
    root.end(end_time=_ns(end))
