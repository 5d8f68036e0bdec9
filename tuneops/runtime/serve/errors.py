"""TGI's error shape: `{"error": "...", "error_type": "..."}` with TGI's status codes, so `huggingface_hub`
maps each one onto the same exception class it raises against a real TGI (ValidationError, OverloadedError...)."""

from __future__ import annotations

from typing import Any

# TGI prefixes the message with the kind of failure (server.rs `From<InferError>`).
_PREFIX = {
    "validation": "Input validation error: ",
    "generation": "Request failed during generation: ",
}


class ServeError(Exception):
    """An error that becomes a TGI `ErrorResponse` with an HTTP status."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = _PREFIX.get(error_type, "") + message
        self.counted = False  # set once tgi_request_failure has counted it

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "error_type": self.error_type}

    def openai_body(self) -> dict[str, Any]:
        # OpenAI-style routes report mid-stream errors in this shape (TGI chat stream, openai-python reads it).
        return {"error": {"message": self.message, "http_status_code": self.status}}


def validation(message: str) -> ServeError:
    return ServeError(422, "validation", message)


def overloaded() -> ServeError:
    err = ServeError(429, "overloaded", "")
    err.message = "Model is overloaded"
    return err


def not_ready(reason: str = "model is not loaded yet") -> ServeError:
    return ServeError(503, "unavailable", f"Service unavailable: {reason}")


def timed_out(seconds: float) -> ServeError:
    return ServeError(504, "timeout", f"Request timed out after {seconds:g} s")


def generation(message: str) -> ServeError:
    return ServeError(424, "generation", message)


def unauthorized() -> ServeError:
    return ServeError(401, "unauthorized", "missing or invalid bearer token")
