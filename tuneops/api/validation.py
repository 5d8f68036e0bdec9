"""Turn documents into typed resources, or into errors that name the field and the rule.

    spec.lora.r: must be > 0
    spec.quantization: method qlora needs quantization (e.g. {bits: 4, type: nf4})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .base import API_VERSION, DNS_NAME, QUANTITY, STORAGE_URI, RuleViolation
from .kinds import BY_KIND

_FRIENDLY_PATTERNS = {
    DNS_NAME: "must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.')",
    QUANTITY: "must be a Kubernetes quantity such as 500m, 4 or 48Gi",
    STORAGE_URI: "must be an s3://, gs://, gcs://, az://, abfs:// or file:// URI, or an absolute path",
}


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part):  # pydantic's internal validator tags, e.g. 'function-after[...]'
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict[str, Any]) -> tuple[str, str]:
    """(extra path suffix, message) for one pydantic error."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), RuleViolation):
        violation: RuleViolation = ctx["error"]
        return violation.field, violation.message
    if kind == "missing":
        return "", "is required"
    if kind == "extra_forbidden":
        return "", "unknown field (check spelling; secrets go in a Secret referenced by name)"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        return "", f"must be {bounds[kind]} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return "", f"must be one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return "", _FRIENDLY_PATTERNS.get(pattern, f"must match {pattern}")
    msg = err["msg"]
    if msg.startswith("Input should be"):
        msg = "must be" + msg[len("Input should be"):]
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return "", msg


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    errors = []
    for err in exc.errors():
        suffix, message = _message(err)
        path = _path(err["loc"]) + suffix
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        errors.append(FieldError(path, message))
    return errors


class InvalidResource(ValueError):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def parse_resource(doc: Any) -> BaseModel:
    """Validate one document (a dict from YAML/JSON) as a tuneops resource; raise InvalidResource."""
    if not isinstance(doc, dict):
        raise InvalidResource([FieldError("", f"expected a mapping, got {type(doc).__name__}")])
    kind = doc.get("kind")
    if kind not in BY_KIND:
        raise InvalidResource([FieldError("kind", f"unknown kind {kind!r} (expected one of {', '.join(BY_KIND)})")])
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidResource([FieldError("apiVersion", f"must be {API_VERSION}, got {doc.get('apiVersion')!r}")])
    try:
        return BY_KIND[kind].model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidResource(field_errors(exc)) from None


def parse_spec(model: type[BaseModel], spec: Any, prefix: str = "spec") -> BaseModel:
    """Validate a bare spec (e.g. the operator's view of a custom resource)."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise InvalidResource(field_errors(exc, prefix)) from None
