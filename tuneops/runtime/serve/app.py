"""The HTTP layer: TGI's routes with TGI's JSON shapes (see shared docs `tgi-api-and-kopf.md`).

`create_app(config, load)` returns a FastAPI app; the model loads in a thread at startup, so liveness
(`/livez`) answers at once and readiness (`/health`) turns 200 only when the model is loaded and warm."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import errors
from .engine import TokenEvent
from .loader import LoadedModel
from .metrics import CONTENT_TYPE
from .middleware import RequestContext, current_request_id
from .schemas import (ChatRequest, CompletionRequest, GenerateParameters, GenerateRequest, TokenizeRequest,
                      check_text, chat_to_parameters, completion_to_parameters, default_parameters)
from .state import Outcome, Prepared, ServeConfig, ServerState

SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
_ERROR_RESPONSE = {"description": "TGI error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: _ERROR_RESPONSE for code in (401, 422, 424, 429, 503, 504)}


def create_app(config: ServeConfig, load: Callable[[], LoadedModel]) -> FastAPI:
    state = ServerState(config, load)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loading = loop.run_in_executor(None, state.start)
        yield
        await loading
        await loop.run_in_executor(None, state.stop)

    app = FastAPI(title="tuneops serve (TGI-compatible)", version=config.version, lifespan=lifespan)
    app.state.serve = state
    app.add_middleware(RequestContext, state=state)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    _install_error_handlers(app, state)
    _health_routes(app, state)
    _tgi_routes(app, state)
    _openai_routes(app, state)
    _adapter_routes(app, state)
    return app


# ---- errors --------------------------------------------------------------------------------------------

def _error_response(exc: errors.ServeError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(errors.ServeError)
    async def serve_error(_: Request, exc: errors.ServeError) -> JSONResponse:
        state.record_failure(exc)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = errors.validation(_describe_validation(exc))
        state.record_failure(error)
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8): bad input, 422
            return _error_response(errors.validation(f"body: {exc.detail}"))
        kind = {404: "not_found", 405: "method_not_allowed", 413: "validation"}.get(exc.status_code, "http")
        return _error_response(errors.ServeError(exc.status_code, kind, str(exc.detail)))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        parts.append(f"`{where}`: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body"


# ---- health, info, metrics -----------------------------------------------------------------------------

def _health_routes(app: FastAPI, state: ServerState) -> None:
    async def health() -> Response:
        if state.ready and not state.draining:
            return Response(status_code=200)
        return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)

    for path in ("/health", "/ping", "/"):
        app.add_api_route(path, health, methods=["GET"], include_in_schema=path == "/health",
                          responses={503: _ERROR_RESPONSE})

    @app.get("/livez", responses={500: _ERROR_RESPONSE})
    async def liveness() -> Response:
        """Liveness: the process is up; 500 only if loading the model failed (restart me)."""
        if state.load_error:
            return JSONResponse({"error": state.load_error, "error_type": "healthcheck"}, status_code=500)
        return Response(status_code=200)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        cfg = state.config
        return {"model_id": state.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
                "model_dtype": str(getattr(state.loaded.model, "dtype", "")).replace("torch.", "") if state.loaded
                else None, "model_device_type": str(state.engine.device.type) if state.engine else None,
                "max_concurrent_requests": cfg.max_concurrent_requests, "max_best_of": 1,
                "max_stop_sequences": 4, "max_input_tokens": cfg.max_input_tokens,
                "max_total_tokens": cfg.max_total_tokens, "validation_workers": 1,
                "max_client_batch_size": 4, "router": "tuneops-serve", "version": cfg.version,
                "sha": None, "docker_label": None,
                "max_batch_size": cfg.max_batch_size, "ready": state.ready,
                **({"default_adapter": state.adapters.default,
                    "adapters": state.adapters.describe()["adapters"]} if state.adapters else {})}

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        state.drift_report()  # refresh the drift gauges
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/drift")
    async def drift() -> dict[str, Any]:
        return state.drift_report()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = [state.model_id, *(state.adapters.adapters if state.adapters else [])]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": state.model_id}
                                           for i in ids]}


# ---- TGI generate routes -------------------------------------------------------------------------------

def _token(event: TokenEvent) -> dict[str, Any]:
    return {"id": event.id, "text": event.text, "logprob": event.logprob, "special": event.special}


def _generate_body(outcome: Outcome, prepared: Prepared, prompt: str, full_text: bool) -> dict[str, Any]:
    final = outcome.final
    body: dict[str, Any] = {"generated_text": (prompt if full_text else "") + (final.generated_text or "")}
    if prepared.params.details:
        body["details"] = {"finish_reason": final.finish_reason, "generated_tokens": final.generated_tokens,
                           "seed": final.seed, "prefill": [], "tokens": [_token(t) for t in outcome.tokens]}
    return body


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _sse_events(state: ServerState, seq: Any, events: asyncio.Queue,
                      render: Callable[[TokenEvent], list[dict[str, Any]]],
                      on_error: Callable[[errors.ServeError], dict[str, Any]], *, done: bool) -> AsyncIterator[bytes]:
    """One SSE loop for every streaming route: `render` turns a token into its route's events, idle ticks
    become `:` comments, a failure becomes one error event (TGI shape or OpenAI shape), and the OpenAI
    routes end with `data: [DONE]` (TGI's /generate_stream does not)."""
    try:
        async for event in state.stream(seq, events):
            if event is None:
                yield b":\n\n"
                continue
            for payload in render(event):
                yield _sse(payload)
    except errors.ServeError as exc:
        yield _sse(on_error(exc))
    if done:
        yield b"data: [DONE]\n\n"


def _tgi_error(exc: errors.ServeError) -> dict[str, Any]:
    return exc.body()


def _openai_error(exc: errors.ServeError) -> dict[str, Any]:
    return exc.openai_body()


def _tgi_routes(app: FastAPI, state: ServerState) -> None:
    def prepare(req: GenerateRequest | TokenizeRequest) -> Prepared:
        state.require_ready()
        params = req.parameters if req.parameters is not None else default_parameters()
        return state.prepare(req.inputs, params, adapter=params.adapter_id)

    async def generate_one(req: GenerateRequest, *, full_text_default: bool) -> tuple[dict[str, Any], Outcome]:
        prepared = prepare(req)
        outcome = await state.run_to_end(current_request_id(), prepared)
        full = prepared.params.return_full_text
        body = _generate_body(outcome, prepared, req.inputs, full_text_default if full is None else full)
        return body, outcome

    async def stream_events(req: GenerateRequest) -> AsyncIterator[bytes]:
        """TGI's `/generate_stream`: every failure, validation included, is an event in a 200 stream."""
        try:
            prepared = prepare(req)
            seq, events = state.submit(current_request_id(), prepared)
        except errors.ServeError as exc:
            state.record_failure(exc)
            yield _sse(exc.body())
            return
        full = prepared.params.return_full_text

        def render(event: TokenEvent) -> list[dict[str, Any]]:
            body: dict[str, Any] = {"index": event.index, "token": _token(event), "generated_text": None,
                                    "details": None}
            if event.finish_reason:
                body["generated_text"] = (req.inputs if full else "") + (event.generated_text or "")
                if prepared.params.details:
                    body["details"] = {"finish_reason": event.finish_reason,
                                       "generated_tokens": event.generated_tokens, "seed": event.seed,
                                       "input_length": len(prepared.input_ids)}
            return [body]

        async for chunk in _sse_events(state, seq, events, render, _tgi_error, done=False):
            yield chunk

    def stream_response(req: GenerateRequest) -> StreamingResponse:
        return StreamingResponse(stream_events(req), media_type="text/event-stream", headers=SSE_HEADERS)

    @app.post("/generate", responses=ERROR_RESPONSES)
    async def generate(req: GenerateRequest) -> JSONResponse:
        body, outcome = await generate_one(req, full_text_default=False)
        return JSONResponse(body, headers={"x-prompt-tokens": str(outcome.input_length),
                                           "x-generated-tokens": str(outcome.final.generated_tokens)})

    @app.post("/generate_stream", responses=ERROR_RESPONSES)
    async def generate_stream(req: GenerateRequest) -> StreamingResponse:
        return stream_response(req)

    @app.post("/", responses=ERROR_RESPONSES)
    async def compat_generate(req: GenerateRequest) -> Response:
        """What `InferenceClient.text_generation` calls: a list, or a stream if `stream` is true; the prompt
        is prepended unless `return_full_text` is false (the model's pipeline tag is text-generation)."""
        if req.stream:
            return stream_response(req)
        body, _ = await generate_one(req, full_text_default=True)
        return JSONResponse([body])

    @app.post("/tokenize", responses=ERROR_RESPONSES)
    async def tokenize(req: TokenizeRequest) -> list[dict[str, Any]]:
        state.require_ready()
        tok = state.tokenizer
        if not getattr(tok, "is_fast", False):
            raise errors.ServeError(404, "not_found", "tokenization needs a fast tokenizer")
        check_text("inputs", req.inputs, max_chars=state.config.max_input_chars)
        enc = tok(req.inputs, return_offsets_mapping=True)
        return [{"id": tid, "text": req.inputs[start:stop], "start": start, "stop": stop}
                for tid, (start, stop) in zip(enc["input_ids"], enc["offset_mapping"])]


# ---- adapter registry admin --------------------------------------------------------------------------

class DefaultAdapterRequest(BaseModel):
    adapter: str


def _adapter_routes(app: FastAPI, state: ServerState) -> None:
    """List the loaded adapters; switch the default (behind the bearer token when auth is on)."""

    def registry() -> Any:
        state.require_ready()
        if state.adapters is None:
            raise errors.ServeError(404, "not_found", "this server serves one model; start it with --adapter")
        return state.adapters

    @app.get("/adapters", responses=ERROR_RESPONSES)
    async def list_adapters() -> dict[str, Any]:
        return registry().describe()

    @app.post("/adapters/default", responses=ERROR_RESPONSES)
    async def set_default(req: DefaultAdapterRequest) -> dict[str, Any]:
        adapters = registry()
        previous = adapters.set_default(req.adapter)
        return {"previous": previous, **adapters.describe()}


# ---- OpenAI-compatible routes --------------------------------------------------------------------------

def _finish_openai(reason: str | None) -> str | None:
    # TGI `FinishReason::format(true)`: eos_token reads "stop" on the OpenAI routes.
    return "stop" if reason == "eos_token" else reason


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _openai_routes(app: FastAPI, state: ServerState) -> None:
    def model_name(requested: str | None) -> str:
        return state.model_id if requested in (None, "tgi") else requested

    def render_chat(req: ChatRequest) -> str:
        if not req.messages:
            raise errors.validation("`messages` cannot be empty")
        tok = state.tokenizer
        if not getattr(tok, "chat_template", None):
            raise errors.ServeError(422, "template_error", "the model has no chat template")
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 errors (e.g. roles that must alternate) are the caller's input
            raise errors.ServeError(422, "template_error", f"chat template: {exc}") from None

    def logprobs_block(wanted: bool | None, tokens: list[TokenEvent]) -> dict[str, Any] | None:
        if not wanted:
            return None
        return {"content": [{"token": t.text, "logprob": t.logprob, "top_logprobs": []} for t in tokens]}

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(req: ChatRequest) -> Response:
        state.require_ready()
        params = chat_to_parameters(req)
        prepared = state.prepare(render_chat(req), params, field_name="messages", add_special_tokens=False,
                                 adapter=req.model, adapter_field="model")
        # Drift compares what users write with the training prompts (system + user texts, no template).
        prepared.drift_text = "\n".join(m.text() for m in req.messages if m.role in ("system", "user"))
        prepared.embed_text = "\n".join(m.text() for m in req.messages if m.role == "user")  # topic: user turns
        created, model = int(time.time()), model_name(req.model)
        base = {"id": "", "created": created, "model": model, "system_fingerprint": state.config.fingerprint}
        if not req.stream:
            outcome = await state.run_to_end(current_request_id(), prepared)
            final = outcome.final
            return JSONResponse({
                "object": "chat.completion", **base,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": final.generated_text},
                             "logprobs": logprobs_block(req.logprobs, outcome.tokens),
                             "finish_reason": _finish_openai(final.finish_reason)}],
                "usage": _usage(len(prepared.input_ids), final.generated_tokens or 0)})
        # Admission (429) happens before the stream starts, so the client sees a real status code.
        seq, events = state.submit(current_request_id(), prepared)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def render(event: TokenEvent) -> list[dict[str, Any]]:
            out = [{"object": "chat.completion.chunk", **base, "choices": [{
                "index": 0, "delta": {"role": "assistant", "content": "" if event.special else event.text},
                "logprobs": logprobs_block(req.logprobs, [event]),
                "finish_reason": _finish_openai(event.finish_reason)}], "usage": None}]
            if event.finish_reason and include_usage:
                out.append({"object": "chat.completion.chunk", **base, "choices": [],
                            "usage": _usage(len(prepared.input_ids), event.generated_tokens or 0)})
            return out

        return StreamingResponse(_sse_events(state, seq, events, render, _openai_error, done=True),
                                 media_type="text/event-stream", headers=SSE_HEADERS)

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(req: CompletionRequest) -> Response:
        state.require_ready()
        params = completion_to_parameters(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise errors.validation("`prompt` cannot be empty")
        if len(prompts) > 4:
            raise errors.validation(f"`prompt` holds at most 4 prompts (max_client_batch_size). Given: {len(prompts)}")
        prepared = [state.prepare(p, params, field_name="prompt", adapter=req.model, adapter_field="model")
                    for p in prompts]
        created, model = int(time.time()), model_name(req.model)
        base = {"id": "", "created": created, "model": model, "system_fingerprint": state.config.fingerprint}
        if not req.stream:
            outcomes = await asyncio.gather(*(state.run_to_end(current_request_id(), p) for p in prepared))
            return JSONResponse({
                "object": "text_completion", **base,
                "choices": [{"index": i, "text": o.final.generated_text, "logprobs": None,
                             "finish_reason": _finish_openai(o.final.finish_reason)} for i, o in enumerate(outcomes)],
                "usage": _usage(sum(len(p.input_ids) for p in prepared),
                                sum(o.final.generated_tokens or 0 for o in outcomes))})
        if len(prepared) != 1:
            raise errors.validation("`stream` supports a single `prompt`")
        seq, events = state.submit(current_request_id(), prepared[0])

        def render(event: TokenEvent) -> list[dict[str, Any]]:
            chunk: dict[str, Any] = {"object": "text_completion", **base, "choices": [{
                "index": 0, "text": "" if event.special else event.text, "logprobs": None,
                "finish_reason": event.finish_reason or ""}]}
            if event.finish_reason:
                chunk["usage"] = _usage(len(prepared[0].input_ids), event.generated_tokens or 0)
            return [chunk]

        return StreamingResponse(_sse_events(state, seq, events, render, _openai_error, done=True),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
