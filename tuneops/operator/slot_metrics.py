"""Live metrics of a ModelDeployment slot from Prometheus (TUNEOPS_PROMETHEUS_URL), for the preview metric gates
and the post-promotion checks.

The serving pods are scraped by the chart's PodMonitor, which copies the pod labels into `modeldeployment`,
`slot` and `version` (see charts/tuneops/templates/servicemonitor.yaml). Queries filter on the version, so a
slot reused by another version never mixes the two:
- error rate: 5xx share of `tuneops_http_requests_total` (the built-in server; TGI has no per-code counter)
- p95 latency: `histogram_quantile(0.95, tgi_request_duration_bucket)` in ms (both engines)
Only the slots that need it are queried: the idle slot while a promotion with metric gates is pending, the
active slot while its post-promotion watch runs (over the time since the switch, at least 30 s).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from .md_rollback import SlotMetrics
from .meta import label_value, parse_time

log = logging.getLogger("tuneops.operator")
DEFAULT_WINDOW = 300  # seconds of rate() for the preview gates
MIN_WINDOW = 30


def _quote(value: str) -> str:
    return json.dumps(value)  # a PromQL string literal has the same escapes as JSON


def queries(namespace: str, name: str, version: str, window: int) -> dict[str, str]:
    sel = (f'namespace={_quote(namespace)},modeldeployment={_quote(label_value(name))},'
           f'version={_quote(label_value(version))}')
    w = f"{int(window)}s"
    return {
        "error_rate": (f'sum(rate(tuneops_http_requests_total{{{sel},code=~"5.."}}[{w}])) / '
                       f'sum(rate(tuneops_http_requests_total{{{sel}}}[{w}]))'),
        "p95_latency_ms": f"histogram_quantile(0.95, sum by (le) (rate(tgi_request_duration_bucket{{{sel}}}[{w}]))) * 1000",
    }


def wanted_window(md: dict[str, Any], slot: str, now: datetime) -> int | None:
    """Seconds of history to look at for `slot`, or None when nothing needs its metrics now."""
    spec, status = md.get("spec") or {}, md.get("status") or {}
    promotion = spec.get("promotion") or {}
    watch = status.get("postPromotion") or {}
    if slot == status.get("activeSlot") and watch.get("state") == "Watching" and promotion.get("postPromotion"):
        window = int(promotion["postPromotion"].get("windowSeconds") or DEFAULT_WINDOW)
        since = parse_time(watch.get("since"))
        elapsed = int((now - since).total_seconds()) if since else window
        return max(MIN_WINDOW, min(window, elapsed))
    gates = promotion.get("gates") or {}
    promoting = spec.get("activeVersion") != status.get("activeVersion")
    if (slot != status.get("activeSlot") and (promoting or spec.get("previewVersion"))
            and (gates.get("maxErrorRate") is not None or gates.get("maxP95LatencyMs") is not None)):
        return DEFAULT_WINDOW
    return None


class PrometheusSlotMetrics:
    """The Reconciler's `slot_metrics` hook: (ModelDeployment, slot) -> SlotMetrics | None."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> float | None:
        data = urllib.parse.urlencode({"query": promql}).encode()
        req = urllib.request.Request(f"{self.url}/api/v1/query", data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - operator-configured URL
            body = json.loads(resp.read())
        result = (body.get("data") or {}).get("result") or []
        if body.get("status") != "success" or not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None  # 0/0 (no traffic) is NaN: not measured

    def __call__(self, md: dict[str, Any], slot: str) -> SlotMetrics | None:
        window = wanted_window(md, slot, datetime.now(timezone.utc))
        version = (((md.get("status") or {}).get("slots") or {}).get(slot) or {}).get("version")
        if window is None or not version:
            return None
        meta = md["metadata"]
        try:
            values = {key: self.query(q) for key, q in queries(meta["namespace"], meta["name"], version,
                                                               window).items()}
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log.warning("Prometheus query for %s/%s slot %s failed: %s", meta["namespace"], meta["name"], slot, exc)
            return None
        return SlotMetrics(**values)
