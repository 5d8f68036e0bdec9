"""Row validation after cleaning: turn structure (roles alternate, no empty turn, assistant present) and
character-length filters. Token-length checks live in `tokens.py` (they need the model's tokenizer)."""

from __future__ import annotations

from collections.abc import Callable

from .errors import RowError
from .formats import Messages

FieldOf = Callable[[Messages, int, str], str]


def check_turns(messages: Messages, field_of: FieldOf, *, require_assistant: bool,
                assistant_first: bool = False) -> None:
    """An optional leading system turn, then user/assistant alternating from user (from assistant for
    raw text), every turn non-empty, and (if required) an assistant turn last."""
    if not messages:
        raise RowError("empty_turn", "no turns", field_of(messages, 0, "content"))
    start = 1 if messages[0]["role"] == "system" else 0
    expected = "assistant" if assistant_first else "user"
    for i, message in enumerate(messages):
        role = message["role"]
        if i >= start:
            if role != expected:
                found = "a second system turn (system only comes first)" if role == "system" else f"{role}"
                raise RowError("role_order", f"expected a {expected} turn, found {found}", field_of(messages, i, "role"))
            expected = "assistant" if expected == "user" else "user"
        if not message["content"] or message["content"].isspace():
            raise RowError("empty_turn", f"empty {role} turn (after cleaning)", field_of(messages, i, "content"))
    if require_assistant and messages[-1]["role"] != "assistant":
        raise RowError("no_assistant_turn", "the last turn must be the assistant's (validation.requireAssistantTurn)",
                       field_of(messages, len(messages) - 1, "role"))


def check_chars(total: int, min_chars: int, max_chars: int | None) -> None:
    if total < min_chars:
        raise RowError("too_short", f"{total} characters < cleaning.minChars {min_chars}")
    if max_chars is not None and total > max_chars:
        raise RowError("too_long_chars", f"{total} characters > cleaning.maxChars {max_chars}")
