"""A stand-in for Prometheus' HTTP query API on loopback: no Prometheus can scrape kwok's pods, so tests set the
values the operator's PromQL should return, per version label, and see which queries it sent."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakePrometheus(ThreadingHTTPServer):
    """/api/v1/query answering from `values[version][metric]` (absent: an empty vector, i.e. no data)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.values: dict[str, dict[str, float]] = {}
        self.queries: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        query = urllib.parse.parse_qs(self.rfile.read(length).decode())["query"][0]
        self.server.queries.append(query)
        version = re.search(r'version="([^"]+)"', query).group(1)
        metric = "error_rate" if "tuneops_http_requests_total" in query else "p95_latency_ms"
        value = self.server.values.get(version, {}).get(metric)
        result = [] if value is None else [{"metric": {}, "value": [time.time(), str(value)]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
