"""Slot metrics from Prometheus: which slots are queried when, the PromQL, and the HTTP client (loopback stand-in)."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta, timezone

import pytest

from tests.operator.factories import modeldeployment
from tests.operator.fake_prometheus import FakePrometheus
from tuneops.operator.md_rollback import SlotMetrics
from tuneops.operator.slot_metrics import PrometheusSlotMetrics, queries, wanted_window

NOW = datetime(2026, 11, 25, 9, 0, 0, tzinfo=timezone.utc)
WATCHING = {"activeSlot": "green", "activeVersion": "bot-v2",
            "slots": {"blue": {"version": "bot-v1"}, "green": {"version": "bot-v2"}},
            "postPromotion": {"version": "bot-v2", "since": "2026-11-25T08:59:00Z", "state": "Watching"}}


def test_only_the_slots_that_need_metrics_are_queried():
    md = modeldeployment(active="bot-v2", status=copy.deepcopy(WATCHING),
                         promotion={"postPromotion": {"windowSeconds": 600, "maxErrorRate": 0.05}})
    assert wanted_window(md, "green", NOW) == 60  # the time since the switch
    assert wanted_window(md, "green", NOW - timedelta(seconds=55)) == 30  # at least 30 s of rate()
    assert wanted_window(md, "green", NOW + timedelta(hours=1)) == 600  # at most the window
    assert wanted_window(md, "blue", NOW) is None
    md["status"]["postPromotion"]["state"] = "Passed"
    assert wanted_window(md, "green", NOW) is None
    gated = modeldeployment(active="bot-v3", status=copy.deepcopy(WATCHING), promotion={"gates": {"maxP95LatencyMs": 900}})
    assert wanted_window(gated, "blue", NOW) == 300 and wanted_window(gated, "green", NOW) is None


def test_promql_filters_on_the_version():
    q = queries("ml", "bot", "bot-v2", 60)
    assert q["error_rate"] == (
        'sum(rate(tuneops_http_requests_total{namespace="ml",modeldeployment="bot",version="bot-v2",code=~"5.."}[60s]))'
        ' / sum(rate(tuneops_http_requests_total{namespace="ml",modeldeployment="bot",version="bot-v2"}[60s]))')
    assert q["p95_latency_ms"].startswith("histogram_quantile(0.95, sum by (le) (rate(tgi_request_duration_bucket{")


@pytest.fixture
def prometheus():
    server = FakePrometheus()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_client_reads_values_and_treats_no_data_as_unmeasured(prometheus):
    md = modeldeployment(active="bot-v2", status=copy.deepcopy(WATCHING), promotion={"postPromotion": {"maxErrorRate": 0.05}})
    source = PrometheusSlotMetrics(prometheus.url)
    prometheus.values = {"bot-v2": {"error_rate": 0.25, "p95_latency_ms": 1234.5}}
    assert source(md, "green") == SlotMetrics(error_rate=0.25, p95_latency_ms=1234.5)
    assert len(prometheus.queries) == 2 and all('version="bot-v2"' in q for q in prometheus.queries)
    prometheus.values = {"bot-v2": {"error_rate": float("nan")}}  # 0/0: no requests
    assert source(md, "green") == SlotMetrics()
    assert source(md, "blue") is None and len(prometheus.queries) == 4  # blue needs nothing: not queried
    assert PrometheusSlotMetrics("http://127.0.0.1:9", timeout=0.5)(md, "green") is None  # unreachable: None
