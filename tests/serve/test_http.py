"""Raw HTTP against a real server: TGI's error shapes and codes, readiness vs liveness, back-pressure,
timeouts, auth, graceful drain, metrics, request ids."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tuneops.runtime.serve.server import BackgroundServer
from tuneops.runtime.serve.state import ServeConfig

PROMPT = "The capital of France is"


def gen(max_new_tokens: int = 4, **parameters) -> dict:
    return {"inputs": PROMPT, "parameters": {"max_new_tokens": max_new_tokens, **parameters}}


def assert_tgi_error(response: httpx.Response, status: int, error_type: str, *, mentions: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert mentions in body["error"], body
    return body


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("parameters, field", [
    ({"temperature": 0}, "temperature"),
    ({"top_p": 1.0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"repetition_penalty": -1}, "repetition_penalty"),
    ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 10_000}, "max_new_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"best_of": 2}, "best_of"),
    ({"temperature": "hot"}, "parameters.temperature"),
])
def test_bad_parameters_are_422_naming_the_field(http, parameters, field):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3, **parameters}}
    err = assert_tgi_error(http.post("/generate", json=body), 422, "validation", mentions=field)
    assert err["error"].startswith("Input validation error: ")


def test_bad_bodies_are_422_never_500(http):
    assert_tgi_error(http.post("/generate", content=b'{"inputs": "x",', headers={"content-type": "application/json"}),
                     422, "validation")
    assert_tgi_error(http.post("/generate", content=b'{"inputs": "\xff\xfe"}',
                               headers={"content-type": "application/json"}), 422, "validation")
    assert_tgi_error(http.post("/generate", json={"parameters": {}}), 422, "validation", mentions="inputs")
    assert_tgi_error(http.post("/generate", json={"inputs": ""}), 422, "validation", mentions="inputs")
    assert_tgi_error(http.post("/generate", content='{"inputs": "\\ud800 lone surrogate"}',
                               headers={"content-type": "application/json"}), 422, "validation", mentions="UTF-8")
    assert_tgi_error(http.post("/generate", json={"inputs": "word " * 400}), 422, "validation", mentions="256")
    assert_tgi_error(http.post("/v1/chat/completions", json={"messages": []}), 422, "validation", mentions="messages")
    assert_tgi_error(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                             "tools": [{"type": "function"}]}), 422, "tool_error")
    assert_tgi_error(http.post("/nope"), 404, "not_found")


def test_stream_errors_arrive_inside_a_200_stream_without_done(http):
    r = http.post("/generate_stream", json=gen(3, temperature=-2))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("data: ") and "[DONE]" not in r.text
    assert json.loads(r.text[len("data: "):])["error_type"] == "validation"


def test_sse_wire_format(http):
    r = http.post("/generate_stream", json=gen(3))
    assert r.headers["x-accel-buffering"] == "no"
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 3 and all(e.startswith("data: {") for e in events)
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                               "stream": True})
    assert r.text.endswith("data: [DONE]\n\n")


def test_generate_details_and_root_returns_a_list(http):
    body = http.post("/generate", json=gen(3, details=True)).json()
    assert body["details"]["finish_reason"] == "length" and body["details"]["prefill"] == []
    assert "details" not in http.post("/generate", json=gen(3)).json()
    listed = http.post("/", json=gen(3)).json()
    assert isinstance(listed, list) and listed[0]["generated_text"].startswith(PROMPT)


def test_tokenize_gives_ids_and_offsets(http):
    tokens = http.post("/tokenize", json={"inputs": "Hello world"}).json()
    assert [t["text"] for t in tokens] == ["Hello", " world"]
    assert tokens[1]["start"] == 5 and tokens[1]["stop"] == 11


def test_request_id_is_echoed_and_generated(http):
    assert http.get("/info", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(http.get("/info").headers["x-request-id"]) == 32


def test_metrics_use_tgi_names(http):
    http.post("/generate", json=gen(2))
    http.post("/generate", json=gen(2, temperature=-1))
    text = http.get("/metrics").text
    assert "# TYPE tgi_request_count counter" in text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["tgi_request_success"] >= 1
    assert values['tgi_request_failure{err="validation"}'] >= 1
    for name in ("tgi_request_duration_count", "tgi_request_queue_duration_count",
                 "tuneops_request_time_to_first_token_seconds_count", "tgi_request_generated_tokens_sum",
                 "tgi_batch_next_size_count", "tgi_queue_size", 'tuneops_http_requests_total{code="422",route="/generate"}'):
        assert name in values, name
    assert values["tgi_request_generated_tokens_sum"] >= 2


# ---- servers with special settings ---------------------------------------------------------------------

def test_readiness_waits_for_the_model_while_liveness_answers(tiny_loaded):
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return tiny_loaded

    with BackgroundServer(ServeConfig(), slow_load, wait_ready=False) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/livez").status_code == 200
        assert c.get("/health").json() == {"error": "unhealthy", "error_type": "healthcheck"}
        assert_tgi_error(c.post("/generate", json=gen(2)), 503, "unavailable", mentions="not loaded")
        release.set()
        s.state.started.wait(30)
        assert c.get("/health").status_code == 200
        assert c.post("/generate", json=gen(2)).status_code == 200


def test_failed_load_fails_liveness(tiny_loaded):
    def broken():
        raise FileNotFoundError("no weights here")

    with BackgroundServer(ServeConfig(), broken, wait_ready=False) as s, httpx.Client(base_url=s.url) as c:
        s.state.started.wait(10)
        assert c.get("/livez").status_code == 500 and "no weights" in c.get("/livez").json()["error"]
        assert c.get("/health").status_code == 503


class Paused:
    """Holds the engine between decode steps (a stand-in for a slow model), so a request stays in flight
    for as long as the test needs, whatever the random model generates."""

    def __init__(self, engine) -> None:
        self.gate = threading.Event()
        self._step = engine.step
        engine.step = self.step

    def step(self) -> None:
        self.gate.wait(60)
        self._step()


def test_overload_is_429_and_stream_overload_is_in_stream(tiny_loaded):
    with BackgroundServer(ServeConfig(max_concurrent_requests=1), lambda: tiny_loaded) as s, \
            httpx.Client(base_url=s.url, timeout=60) as c:
        paused = Paused(s.state.engine)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.post, "/generate", json=gen(3))
            deadline = time.monotonic() + 10
            while not s.state.batcher.admitted and time.monotonic() < deadline:
                time.sleep(0.01)
            assert_tgi_error(c.post("/generate", json=gen(2)), 429, "overloaded", mentions="overloaded")
            r = c.post("/generate_stream", json=gen(2))
            assert r.status_code == 200 and '"error_type":"overloaded"' in r.text
            assert_tgi_error(c.post("/v1/completions", json={"prompt": "hi", "stream": True}), 429, "overloaded")
            paused.gate.set()
            assert first.result(timeout=30).status_code == 200
        assert c.post("/generate", json=gen(2)).status_code == 200
        metrics = c.get("/metrics").text
        assert 'tgi_request_failure{err="overloaded"} 3' in metrics


def test_client_going_away_frees_its_slot(tiny_loaded):
    with BackgroundServer(ServeConfig(max_concurrent_requests=1, max_total_tokens=4096), lambda: tiny_loaded) as s, \
            httpx.Client(base_url=s.url, timeout=60) as c:
        with c.stream("POST", "/generate_stream", json=gen(4000)) as r:
            assert next(r.iter_lines()).startswith("data: ")
        deadline = time.monotonic() + 10
        while (s.state.batcher.admitted or s.state.engine.running) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.state.engine.running == [] and s.state.batcher.admitted == 0
        assert c.post("/generate", json=gen(2)).status_code == 200


def test_request_timeout_is_504(tiny_loaded):
    with BackgroundServer(ServeConfig(request_timeout_s=0.5), lambda: tiny_loaded) as s, \
            httpx.Client(base_url=s.url, timeout=60) as c:
        paused = Paused(s.state.engine)
        threading.Timer(1.5, paused.gate.set).start()  # the model "takes" 1.5 s per step
        assert_tgi_error(c.post("/generate", json=gen(5)), 504, "timeout", mentions="timed out")
        assert c.post("/generate", json=gen(2)).status_code == 200


def test_bearer_token_auth(tiny_loaded):
    with BackgroundServer(ServeConfig(api_token="s3cret"), lambda: tiny_loaded) as s, \
            httpx.Client(base_url=s.url) as c:
        assert_tgi_error(c.post("/generate", json=gen(2)), 401, "unauthorized")
        assert_tgi_error(c.post("/generate", json=gen(2), headers={"authorization": "Bearer nope"}), 401,
                         "unauthorized")
        assert c.post("/generate", json=gen(2), headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes need no token


def test_payload_limit_is_413(tiny_loaded):
    with BackgroundServer(ServeConfig(payload_limit=1000), lambda: tiny_loaded) as s, \
            httpx.Client(base_url=s.url) as c:
        assert_tgi_error(c.post("/generate", json={"inputs": "x" * 2000}), 413, "validation")


def test_graceful_shutdown_drains_in_flight_requests(tiny_loaded):
    s = BackgroundServer(ServeConfig(drain_timeout_s=30, max_total_tokens=1024), lambda: tiny_loaded).__enter__()
    first_token = threading.Event()

    def long_stream() -> list[dict]:
        events = []
        with httpx.Client(base_url=s.url, timeout=60) as c, c.stream("POST", "/generate_stream",
                                                                    json=gen(400, details=True)) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    first_token.set()
        return events

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(long_stream)
        assert first_token.wait(30)
        s.server.should_exit = True  # what SIGTERM does
        events = future.result(timeout=60)
    s.thread.join(timeout=60)
    assert not s.thread.is_alive()
    assert events[-1]["details"]["finish_reason"] in ("length", "eos_token")
    assert len(events) == events[-1]["details"]["generated_tokens"] and len(events) > 1
    assert s.state.draining and not s.state.ready
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health")


def test_each_request_is_traced_with_tokenize_queue_and_generate_spans(http):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the process-wide provider, as configure_exporter() sets it
    assert http.post("/generate", json=gen(3), headers={"x-request-id": "traced-1"}).status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()
             if s.name == "request" and s.attributes["tuneops.request_id"] == "traced-1"
             or s.name in ("tokenize", "queue", "generate")}
    root = spans["request"]
    assert root.attributes["tuneops.generated_tokens"] == 3 and root.attributes["tuneops.outcome"] == "ok"
    for name in ("tokenize", "queue", "generate"):
        assert spans[name].parent.span_id == root.context.span_id
        assert root.start_time <= spans[name].start_time <= spans[name].end_time <= root.end_time
