"""Property-based fuzzing of every route in the server's OpenAPI (schemathesis, valid and invalid data):
bad input never yields a 5xx, and every 4xx carries TGI's error shape."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tuneops.runtime.serve.server import BackgroundServer  # noqa: E402
from tuneops.runtime.serve.state import ServeConfig  # noqa: E402

EXAMPLES_PER_ROUTE = 25


@pytest.fixture(scope="module")
def fuzz_server(tiny_loaded):
    # Small token limits keep each generated request cheap; fuzzing is about the HTTP layer.
    config = ServeConfig(max_total_tokens=24, max_input_tokens=16, request_timeout_s=30)
    with BackgroundServer(config, lambda: tiny_loaded) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def check(case) -> None:
    response = case.call(timeout=60)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == {"error", "error_type"}, (case.as_curl_command(), body)
        assert isinstance(body["error"], str) and isinstance(body["error_type"], str)
    content_type = response.headers.get("content-type") or [""]
    if content_type[0].startswith("text/event-stream"):
        for event in filter(None, response.text.split("\n\n")):
            assert event.startswith("data: ") or event == ":", event


def test_openapi_lists_every_tgi_route(api_schema):
    routes = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    for route in [("POST", "/"), ("POST", "/generate"), ("POST", "/generate_stream"), ("POST", "/tokenize"),
                  ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/health"),
                  ("GET", "/info"), ("GET", "/metrics")]:
        assert route in routes


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_tgi_error_shape(api_schema, mode):
    # (schemathesis' own pytest plugin does not run on this pytest; driving its strategies with hypothesis
    # directly gives the same cases.)
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # no parameters or body: nothing can be made invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def fuzz(case) -> None:
            check(case)

        fuzz()
