"""One ASGI middleware for what every request needs: a request id (from `x-request-id` or new), optional
bearer-token auth, the payload limit, an access log line and the HTTP status counter."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any

from . import errors
from .logs import request_id

log = logging.getLogger("tuneops.serve.access")

# Probes and scrapers do not carry the token.
OPEN_PATHS = {"/health", "/ping", "/livez", "/metrics"}
KNOWN_ROUTES = {"/", "/generate", "/generate_stream", "/tokenize", "/v1/chat/completions", "/v1/completions",
                "/health", "/ping", "/livez", "/info", "/metrics", "/drift", "/v1/models", "/docs", "/openapi.json",
                "/adapters", "/adapters/default"}


def current_request_id() -> str:
    return request_id.get() or uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        token = request_id.set(rid)
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"  # bounded label set, whatever clients send
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            rejection = self._reject(path, headers)
            if rejection is not None:
                await _send_error(send_with_id, rejection)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.state.metrics.http_requests.labels(route, str(status["code"])).inc()
            log.info("request", extra={"method": scope.get("method"), "path": route, "status": status["code"],
                                       "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            request_id.reset(token)

    def _reject(self, path: str, headers: dict[str, str]) -> errors.ServeError | None:
        cfg = self.state.config
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.payload_limit:
            return errors.ServeError(413, "validation", f"payload of {length} bytes exceeds the limit of "
                                                        f"{cfg.payload_limit} bytes")
        if cfg.api_token and path not in OPEN_PATHS:
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {cfg.api_token}".encode()):
                return errors.unauthorized()
        return None


async def _send_error(send: Any, exc: errors.ServeError) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
