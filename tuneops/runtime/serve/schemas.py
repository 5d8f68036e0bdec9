"""Request bodies of TGI's routes as pydantic models (they give FastAPI its OpenAPI schema) and the semantic
checks TGI runs in `validation.rs`. Types are checked by pydantic; ranges are checked by `check_parameters`,
because on `/generate_stream` TGI reports range errors inside the event stream (HTTP 200), not as a 422."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import errors

MAX_STOP_SEQUENCES = 4


class _Body(BaseModel):
    # TGI's serde structs ignore unknown fields; so do we (clients send extras such as `model`).
    model_config = ConfigDict(extra="ignore")


class GenerateParameters(_Body):
    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: list[str] = Field(default_factory=list)
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: dict[str, Any] | None = None
    adapter_id: str | None = None


def default_parameters() -> GenerateParameters:
    # TGI's `default_parameters()`, used when the request has no `parameters` at all: note do_sample=true.
    return GenerateParameters(do_sample=True)


class GenerateRequest(_Body):
    inputs: str
    parameters: GenerateParameters | None = None
    stream: bool = False  # read only by `POST /`


class TokenizeRequest(_Body):
    inputs: str
    parameters: GenerateParameters | None = None


class TextChunk(_Body):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(_Body):
    role: str
    content: str | list[TextChunk] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(chunk.text for chunk in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(_Body):
    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Body):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    stream: bool = False
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None


def check_text(field: str, text: str, *, max_chars: int) -> None:
    """Non-empty, within the size limit and encodable as UTF-8 (JSON may carry lone surrogates)."""
    if not text:
        raise errors.validation(f"`{field}` cannot be empty")
    if len(text) > max_chars:
        raise errors.validation(f"`{field}` is {len(text)} characters, more than the limit of {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.validation(f"`{field}` is not valid UTF-8 (character {exc.start})") from None


def check_parameters(p: GenerateParameters) -> None:
    """TGI's `validation.rs` range rules, with TGI's messages; raises a 422 `ServeError` naming the field."""
    if p.best_of is not None and p.best_of != 1:
        raise errors.validation("`best_of` > 1 is not supported by this server")
    if p.temperature is not None and p.temperature <= 0:
        raise errors.validation("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and p.repetition_penalty <= 0:
        raise errors.validation("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise errors.validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise errors.validation("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise errors.validation("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise errors.validation("`top_k` must be strictly positive")
    if p.max_new_tokens is not None and p.max_new_tokens <= 0:
        raise errors.validation("`max_new_tokens` must be strictly positive")
    if len(p.stop) > MAX_STOP_SEQUENCES:
        raise errors.validation(
            f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(p.stop)}")
    if any(not s for s in p.stop):
        raise errors.validation("`stop` sequences cannot be empty strings")
    if p.seed is not None and not 0 <= p.seed < 2**63:
        raise errors.validation("`seed` must be between 0 and 2^63-1")
    if p.truncate is not None and p.truncate <= 0:
        raise errors.validation("`truncate` must be strictly positive")
    if p.top_n_tokens:
        raise errors.validation("`top_n_tokens` is not supported by this server")
    if p.grammar is not None:
        raise errors.validation("`grammar` is not supported by this server")
    if p.decoder_input_details:
        raise errors.validation("`decoder_input_details` is not supported by this server")


def stop_list(stop: list[str] | str | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)



def _openai_sampling(temperature: float | None) -> dict[str, Any]:
    """OpenAI semantics: temperature 0 means greedy; anything else (default 1) samples."""
    greedy = temperature == 0
    return {"do_sample": not greedy, "temperature": None if greedy else temperature}

def chat_to_parameters(req: ChatRequest) -> GenerateParameters:
    """TGI `try_into_generate`: temperature 0 means greedy, presence_penalty+2 is the repetition penalty."""
    if req.n not in (None, 1):
        raise errors.validation("`n` > 1 is not supported by this server")
    if req.tools:
        raise errors.ServeError(422, "tool_error", "tools are not supported by this server")
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return GenerateParameters(
        **_openai_sampling(req.temperature),
        top_p=req.top_p,
        seed=req.seed,
        stop=stop_list(req.stop),
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=None if req.presence_penalty is None else req.presence_penalty + 2.0,
        max_new_tokens=max_tokens,
        details=True,
    )


def completion_to_parameters(req: CompletionRequest) -> GenerateParameters:
    return GenerateParameters(
        **_openai_sampling(req.temperature),
        top_p=req.top_p,
        seed=req.seed,
        stop=stop_list(req.stop),
        repetition_penalty=req.repetition_penalty,
        frequency_penalty=req.frequency_penalty,
        max_new_tokens=req.max_tokens,
        details=True,
    )
