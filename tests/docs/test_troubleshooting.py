"""Every message quoted in a heading of docs/troubleshooting.md is still emitted by the code.

The code's messages are read with `ast`: string literals, f-strings (each `{...}` becomes a hole) and `+`
concatenations of them. A quoted message matches when its parts between `…` appear, in order, in one message
of the code — so rewording a message in the code without updating the page fails here.
"""

import ast
import re

import pytest

from .blocks import REPO

PAGE = REPO / "docs" / "troubleshooting.md"
HOLE = "\0"
_CODE_SPAN = re.compile(r"(`+)\s?(.+?)\s?\1")


def _template(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else HOLE for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else HOLE) + (right if right is not None else HOLE)
    return None


def code_messages() -> list[str]:
    out = []
    for path in sorted((REPO / "tuneops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = _template(node)
            if text and len(text) > 3:
                out.append(text)
    return out


def quoted_messages() -> list[str]:
    quoted = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            quoted += [m.group(2) for m in _CODE_SPAN.finditer(line)]
    return quoted


def matches(quote: str, template: str) -> bool:
    at = 0
    for part in (p.strip() for p in quote.split("…")):
        if len(part) < 2:
            continue
        found = template.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


MESSAGES = code_messages()
QUOTES = quoted_messages()


def test_page_quotes_many_messages():
    assert len(QUOTES) >= 30


@pytest.mark.parametrize("quote", QUOTES)
def test_quoted_message_exists_in_code(quote):
    assert any(matches(quote, t) for t in MESSAGES), f"no message in tuneops/ reads {quote!r}: update the page"


def test_matching_is_strict():
    assert matches("unknown kind … (expected one of …)", "unknown kind \0 (expected one of \0)")
    assert not matches("(expected one of …) unknown kind", "unknown kind \0 (expected one of \0)")
    assert not matches("method qlora needs quantisation", "method qlora needs quantization (e.g. {bits: 4})")
