"""Prometheus metric names the dashboard and alerts may use, and where they come from.

`from_code()` reads them from the code that exports them (prometheus_client constructors and custom
collectors in tuneops/). TGI's names come from its docs (shared reference `tgi-api-and-kopf.md`): TGI is
a separate engine and the built-in server mirrors them. FineTuneJob/ModelDeployment state comes from
kube-state-metrics with the chart's custom resource state config. DOCUMENTED_OPERATOR is the fallback for
the operator's metrics while tuneops/operator/ exports none: the test says which list it used.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# TGI router metrics (metrics-exporter-prometheus: counters without `_total`).
TGI = {
    "tgi_request_count": "counter", "tgi_request_success": "counter", "tgi_request_failure": "counter",
    "tgi_queue_size": "gauge", "tgi_batch_current_size": "gauge",
    "tgi_request_duration": "histogram", "tgi_request_generated_tokens": "histogram",
    "tgi_request_input_length": "histogram", "tgi_request_queue_duration": "histogram",
}

# The operator's own metrics (tuneops/operator/metrics.py), the fallback while that file is not in the tree.
DOCUMENTED_OPERATOR = {
    "tuneops_operator_reconciles": "counter",                      # {kind,result}
    "tuneops_operator_reconcile_errors": "counter",                # {kind,error}
    "tuneops_operator_reconcile_duration_seconds": "histogram",    # {kind}
    "tuneops_operator_children_created": "counter",
    "tuneops_operator_queue_depth": "gauge",
}

KSM_CONFIG = REPO / "charts" / "tuneops" / "files" / "kube-state-metrics.yaml"


def from_kube_state_metrics(path: Path = KSM_CONFIG) -> dict[str, str]:
    """Names kube-state-metrics exports with the chart's custom resource state config (all gauges)."""
    cfg = yaml.safe_load(path.read_text())
    return {f"{res['metricNamePrefix']}_{m['name']}": "gauge"
            for res in cfg["spec"]["resources"] for m in res["metrics"]}


_CTOR = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum|"
                   r"(?:Counter|Gauge|Histogram|Summary|Info|StateSet|Unknown)MetricFamily)\(\s*\n?\s*"
                   r"[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
# The built-in server's TGI-style counters (no `_total`, like TGI): `counters.inc("tgi_request_count", ...)`.
_RAW_COUNTER = re.compile(r"\.inc\(\s*[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
_TYPE = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary",
         "Info": "gauge", "Enum": "gauge"}


def from_code(root: Path = REPO / "tuneops") -> dict[str, str]:
    """Metric name -> type for every metric the Python code constructs."""
    found: dict[str, str] = {}
    for path in root.rglob("*.py"):
        for ctor, name in _CTOR.findall(path.read_text(encoding="utf-8", errors="replace")):
            found[name] = _TYPE.get(ctor.replace("MetricFamily", ""), "gauge")
        for name in _RAW_COUNTER.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(name, "raw_counter")
    return found


def series_names(metrics: dict[str, str], client_suffix: bool = True) -> set[str]:
    """Every series name a scrape shows for these metrics (histogram _bucket/_sum/_count, counter _total)."""
    out = set()
    for name, kind in metrics.items():
        out.add(name)
        if kind in ("histogram", "summary"):
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and client_suffix and not name.endswith("_total"):
            out.add(f"{name}_total")  # prometheus_client appends _total
    return out


def available() -> tuple[set[str], str]:
    """Series names dashboards and alerts may use, and where the operator's names came from."""
    serving = from_code(REPO / "tuneops" / "runtime")
    operator = from_code(REPO / "tuneops" / "operator")
    source = "code" if operator else "DOCUMENTED_OPERATOR (tuneops/operator exports no metrics yet)"
    names = (series_names(TGI, client_suffix=False) | series_names(serving)
             | series_names(operator or DOCUMENTED_OPERATOR) | series_names(from_kube_state_metrics()))
    return names, source
