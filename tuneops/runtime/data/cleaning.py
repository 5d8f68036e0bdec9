"""Text cleaning rules (each switchable in `spec.dataset.cleaning`) and the exact-dedupe normal form.

Every rule has a cheap test first (`str.isascii`, a substring check) so clean text, the common case, costs
a few hundred nanoseconds; the regex work only runs on text that needs it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable

from tuneops.api.dataset import CleaningSpec

# C0/C1 controls except \n and \t, plus invisible characters that only corrupt tokenisation (BOM, zero
# width space, word joiner) and lone surrogates (from "\ud800" JSON escapes; they cannot be written as UTF-8).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u2060\ud800-\udfff]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85]")
_NEEDS_WS = re.compile(r"[^\S\n ]|  |\s\n|\n\n\n|^\s|\s$")
_WS_RUN = re.compile(r"(?<=\S)[^\S\n]{2,}|[^\S\n ]")  # internal runs (leading indentation is kept)
_TRAILING = re.compile(r"[^\S\n]+(?=\n)")
_BLANK_LINES = re.compile(r"\n{3,}")
_HTML_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_HTML_BREAK = re.compile(r"[^\S\n]*<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>[^\S\n]*", re.I)  # eats layout spaces
_HTML_TAG = re.compile(r"<(?:[a-zA-Z!/?][^<>]*)>")
_MD_RULES = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),            # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),             # links -> text
    (re.compile(r"^#{1,6}[ \t]+", re.M), ""),                  # headings
    (re.compile(r"^```[^\n]*\n?", re.M), ""),                  # code fences (the code stays)
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),     # bold
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"), r"\1"),         # _italic_
    (re.compile(r"`([^`\n]+)`"), r"\1"),                       # inline code
]


def normalize_unicode(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def strip_control_chars(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    if "\r" in text or not text.isascii():
        text = _NEWLINES.sub("\n", text)
    return _CONTROL.sub("", text)


def collapse_whitespace(text: str) -> str:
    if not _NEEDS_WS.search(text):
        return text
    text = _WS_RUN.sub(" ", text)
    text = _TRAILING.sub("", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def strip_html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    if "<" in text:
        text = _HTML_BLOCK.sub("", text)
        text = _HTML_BREAK.sub("\n", text)
        text = _HTML_TAG.sub("", text)
    return html.unescape(text) if "&" in text else text


def strip_markdown(text: str) -> str:
    if not any(c in text for c in "*_`#[!"):
        return text
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return text


def build_cleaner(spec: CleaningSpec) -> Callable[[str], str]:
    """One function applying the enabled rules in a fixed order (markup first, so the whitespace it
    leaves behind is collapsed too)."""
    steps: list[Callable[[str], str]] = []
    if spec.normalize_unicode:
        steps.append(normalize_unicode)
    if spec.strip_control_chars:
        steps.append(strip_control_chars)
    if spec.strip_html:
        steps.append(strip_html)
    if spec.strip_markdown:
        steps.append(strip_markdown)
    if spec.collapse_whitespace:
        steps.append(collapse_whitespace)
    if not steps:
        return lambda text: text
    if len(steps) == 3 and steps == [normalize_unicode, strip_control_chars, collapse_whitespace]:
        def default_cleaner(text: str) -> str:  # the default rule set, inlined: this is the hot path
            if text.isascii():
                if not text.isprintable():
                    text = strip_control_chars(text)
            else:
                text = strip_control_chars(unicodedata.normalize("NFC", text))
            return collapse_whitespace(text)
        return default_cleaner

    def cleaner(text: str) -> str:
        for step in steps:
            text = step(text)
        return text
    return cleaner


def dedupe_text(messages: list[dict[str, str]]) -> str:
    """Language-agnostic normal form for exact dedupe: NFKC, case-folded, whitespace runs to one space,
    roles kept (the same text as a question and as an answer is not a duplicate)."""
    parts = []
    for m in messages:
        text = m["content"]
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        parts.append(m["role"][0] + ":" + " ".join(text.casefold().split()))
    return "\x1e".join(parts)
