"""Convert a row of any supported format into the canonical chat form `[{"role", "content"}, ...]`.

Formats and their field names (`spec.dataset.fields` maps any of them to the dataset's own column names;
a dotted name such as `data.question` reaches into nested objects):

  alpaca             instruction, input (optional), output, system (optional)
  sharegpt           conversations, from, value, system (optional)      roles human/gpt/system (+ aliases)
  openai-messages    messages, role, content                            roles system/user/assistant
  prompt-completion  prompt, completion, system (optional)              strings, or lists of messages (TRL)
  text               text                                               one assistant turn (raw text SFT)

Conversion only reshapes: it never edits text (that is cleaning) and never guesses. A row that does not
fit raises `RowError` naming the field as the dataset spells it, e.g. `conversations[2].from`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import DataError, RowError
from .jsonfast import JSONDecodeError, loads

Messages = list[dict[str, str]]

DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    "sharegpt": {"conversations": "conversations", "from": "from", "value": "value", "system": "system"},
    "openai-messages": {"messages": "messages", "role": "role", "content": "content"},
    "prompt-completion": {"prompt": "prompt", "completion": "completion", "system": "system"},
    "text": {"text": "text"},
}
# Columns a row must have (the others are optional).
REQUIRED_FIELDS = {"alpaca": ("instruction", "output"), "sharegpt": ("conversations",),
                   "openai-messages": ("messages",), "prompt-completion": ("prompt", "completion"),
                   "text": ("text",)}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "developer": "system"}
_MISSING = object()


def resolve_fields(fmt: str, fields: dict[str, str]) -> dict[str, str]:
    """The format's defaults overridden by the spec; unknown names are a spec error."""
    known = DEFAULT_FIELDS[fmt]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise DataError(f"not a field of format {fmt} (known: {', '.join(known)})",
                        field=f"spec.dataset.fields.{unknown[0]}")
    return {**known, **fields}


def missing_columns(fmt: str, fields: dict[str, str], columns: list[str]) -> list[tuple[str, str]]:
    """(field, column) pairs whose column is absent from a tabular source's header."""
    have = set(columns)
    return [(name, fields[name]) for name in REQUIRED_FIELDS[fmt] if fields[name].split(".")[0] not in have]


def _get(row: dict, column: str) -> Any:
    value = row.get(column, _MISSING)
    if value is _MISSING and "." in column:
        value = row
        for part in column.split("."):
            if not isinstance(value, dict) or part not in value:
                return _MISSING
            value = value[part]
    return value


def _required(row: dict, column: str) -> Any:
    value = _get(row, column)
    if value is _MISSING or value is None:
        raise RowError("missing_field", f"missing field '{column}'", column)
    return value


def _text(value: Any, field: str, *, optional: bool = False) -> str:
    if isinstance(value, str):
        return value
    if optional and (value is None or value is _MISSING):
        return ""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return _content_parts(value, field)
    raise RowError("wrong_type", f"expected text, got {_type_name(value)}", field)


def _content_parts(parts: list[dict], field: str) -> str:
    """OpenAI content-part lists: text parts are joined; images/audio cannot be trained on here."""
    texts = []
    for i, part in enumerate(parts):
        if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
            raise RowError("unsupported_content", f"content part of type {part.get('type')!r} (only text)",
                           f"{field}[{i}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean",
                                         int: "number", float: "number"}.get(type(value), type(value).__name__)


def _turn_list(row: dict, column: str) -> list:
    value = _required(row, column)
    if isinstance(value, str):  # CSV cells and some exports hold the list as a JSON string
        try:
            value = loads(value)
        except (JSONDecodeError, ValueError):
            raise RowError("wrong_type", "expected a list of turns (or a JSON string of one), got text",
                           column) from None
    if not isinstance(value, list):
        raise RowError("wrong_type", f"expected a list of turns, got {_type_name(value)}", column)
    return value


def _turns(items: list, column: str, role_key: str, content_key: str, roles: dict[str, str]) -> Messages:
    out = []
    for item in items:
        # Fast path: a well-formed turn (the overwhelming majority) costs two lookups and a dict.
        if type(item) is dict:
            role = item.get(role_key)
            role = roles.get(role) if type(role) is str else None
            content = item.get(content_key)
            if role is not None and type(content) is str:
                out.append({"role": role, "content": content})
                continue
        out.append(_slow_turn(item, len(out), column, role_key, content_key, roles))
    return out


def _slow_turn(item: Any, i: int, column: str, role_key: str, content_key: str, roles: dict[str, str]) -> dict:
    """A turn that missed the fast path: accept what is only spelled differently, explain the rest."""
    where = f"{column}[{i}]"
    if not isinstance(item, dict):
        raise RowError("wrong_type", f"expected an object with '{role_key}' and '{content_key}', got "
                                     f"{_type_name(item)}", where)
    role = item.get(role_key)
    if not isinstance(role, str) or role.lower() not in roles:
        shown = "missing" if role is None else repr(role)
        raise RowError("bad_role", f"role {shown} is not one of {', '.join(sorted(set(roles)))}",
                       f"{where}.{role_key}")
    content = item.get(content_key, _MISSING)
    if content is None and item.get("tool_calls"):
        raise RowError("unsupported_content", "tool calls are not supported", f"{where}.tool_calls")
    if content is _MISSING or content is None:
        raise RowError("missing_field", f"missing field '{content_key}'", f"{where}.{content_key}")
    return {"role": roles[role.lower()], "content": _text(content, f"{where}.{content_key}")}


class Converter:
    """Turns rows of one format into messages; `field_of(messages, i, attr)` names the source field."""

    def __init__(self, fmt: str, fields: dict[str, str], system_prompt: str | None = None):
        self.format = fmt
        self.fields = resolve_fields(fmt, fields)
        self.system_prompt = system_prompt
        self._convert: Callable[[dict], Messages] = getattr(self, "_" + fmt.replace("-", "_"))
        self._prepended: str | None = None  # where a system turn not in the row's turn list came from

    def __call__(self, row: Any) -> Messages:
        if not isinstance(row, dict):
            raise RowError("not_an_object", f"a row must be a JSON object, got {_type_name(row)}")
        self._prepended = None
        messages = self._convert(row)
        if self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": self.system_prompt})  # rows' own system wins
            self._prepended = "systemPrompt"
        return messages

    # --- per format -------------------------------------------------------------------------------------
    def _openai_messages(self, row: dict) -> Messages:
        f = self.fields
        return _turns(_turn_list(row, f["messages"]), f["messages"], f["role"], f["content"], OPENAI_ROLES)

    def _sharegpt(self, row: dict) -> Messages:
        f = self.fields
        messages = _turns(_turn_list(row, f["conversations"]), f["conversations"], f["from"], f["value"],
                          SHAREGPT_ROLES)
        system = _text(_get(row, f["system"]), f["system"], optional=True)
        if system and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": system})
            self._prepended = f["system"]
        return messages

    def _alpaca(self, row: dict) -> Messages:
        f = self.fields
        instruction = _text(_required(row, f["instruction"]), f["instruction"])
        extra = _text(_get(row, f["input"]), f["input"], optional=True)
        output = _text(_required(row, f["output"]), f["output"])
        messages = self._with_system(row)
        messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction})
        messages.append({"role": "assistant", "content": output})
        return messages

    def _prompt_completion(self, row: dict) -> Messages:
        f = self.fields
        messages = self._with_system(row)
        for name, role in (("prompt", "user"), ("completion", "assistant")):
            value = _required(row, f[name])
            if isinstance(value, list) and value and all(isinstance(t, dict) and "role" in t for t in value):
                messages.extend(_turns(value, f[name], "role", "content", OPENAI_ROLES))  # TRL conversational
            else:
                messages.append({"role": role, "content": _text(value, f[name])})
        return messages

    def _text(self, row: dict) -> Messages:
        column = self.fields["text"]
        return [{"role": "assistant", "content": _text(_required(row, column), column)}]

    def _with_system(self, row: dict) -> Messages:
        column = self.fields.get("system")
        system = _text(_get(row, column), column, optional=True) if column else ""
        return [{"role": "system", "content": system}] if system else []

    # --- error locations ----------------------------------------------------------------------------------
    def field_of(self, messages: Messages, index: int, attr: str = "content") -> str:
        """The dataset's own name for canonical turn `index` of the row converted last, for reject messages."""
        f = self.fields
        if self._prepended is not None:
            if index == 0:
                return self._prepended
            index -= 1
        if self.format in ("openai-messages", "sharegpt"):
            column = f["messages"] if self.format == "openai-messages" else f["conversations"]
            key = (f["role"] if attr == "role" else f["content"]) if self.format == "openai-messages" else (
                f["from"] if attr == "role" else f["value"])
            return f"{column}[{index}].{key}"
        role = messages[min(index + (self._prepended is not None), len(messages) - 1)]["role"]
        if role == "system":
            return f.get("system", "system")
        if self.format == "text":
            return f["text"]
        if self.format == "alpaca":
            return f["instruction"] if role == "user" else f["output"]
        return f["prompt"] if role == "user" else f["completion"]
