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
_CONTROL_OR_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u200b\u2060\ud800-\udfff\u2028\u2029]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85]")
_UNICODE_SPACE = re.compile(r"[^\S\n\r\t\x0b\x0c ]")  # NBSP, ideographic space, ...
_ASCII_WS = " \t\n\r\x0b\x0c"
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
    if text.isprintable() or not _CONTROL_OR_NEWLINE.search(text):  # one C-level scan for clean text
        return text
    if text.isascii():  # str.replace is several times faster than the regex; same result on ASCII
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
    else:
        text = _NEWLINES.sub("\n", text)
    return _CONTROL.sub("", text)


def collapse_whitespace(text: str) -> str:
    """Per line: indentation kept (tabs etc. become spaces), inner whitespace runs become one space,
    trailing whitespace dropped; 3+ newlines become 2; the text is stripped."""
    # Substring tests are memchr-fast; the work only runs when one of them hits.
    if not text or not ("  " in text or "\t" in text or " \n" in text or "\n\n\n" in text
                        or text[0].isspace() or text[-1].isspace() or "\x0b" in text or "\x0c" in text
                        or "\r" in text or (not text.isascii() and _UNICODE_SPACE.search(text))):
        return text
    # str methods per line instead of regex passes (5-10x slower; tests/data/test_bulk.py keeps them as the reference).
    out = []
    for line in text.split("\n"):
        rest = line.lstrip()
        if not rest:
            out.append("")
        elif len(rest) == len(line):
            out.append(" ".join(rest.split()))
        else:
            out.append(" " * (len(line) - len(rest)) + " ".join(rest.split()))
    text = "\n".join(out)
    if "\n\n\n" in text:
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
    if steps == [normalize_unicode, strip_control_chars, collapse_whitespace]:
        def clean(text: str) -> str:  # the default rule set, inlined: this is the hot path
            if not text.isascii():
                text = unicodedata.normalize("NFC", text)
            if text.isprintable():  # no control chars; every whitespace character but " " is unprintable
                if "  " not in text and text[:1] != " " and text[-1:] != " ":
                    return text
                return collapse_whitespace(text)
            return collapse_whitespace(strip_control_chars(text))
        return clean

    def composed(text: str) -> str:
        for step in steps:
            text = step(text)
        return text
    return composed


def memoized(clean: Callable[[str], str], max_len: int = 1024, max_entries: int = 4096) -> Callable[[str], str]:
    """For system turns: datasets repeat the same few system prompts on most rows, so clean each once
    (other turns are mostly unique, where a cache would only add hashing)."""
    cache: dict[str, str] = {}

    def cached(text: str) -> str:
        hit = cache.get(text)
        if hit is not None:
            return hit
        out = clean(text)
        if len(text) <= max_len:
            if len(cache) >= max_entries:
                cache.clear()
            cache[text] = out
        return out
    return cached


def dedupe_text(messages: list[dict[str, str]]) -> str:
    """Language-agnostic normal form for exact dedupe: NFKC, case-folded, whitespace runs to one space,
    roles kept (the same text as a question and as an answer is not a duplicate)."""
    return normal_form("\x00".join([m["role"][0] + ":" + m["content"] for m in messages]))


def normal_form(text: str) -> str:
    """`" ".join(casefold(NFKC(text)).split())`, skipping the split/join when it would change nothing:
    every whitespace character but " " is unprintable, so printable text (the \x00 turn separators
    aside) without double spaces or whitespace at either end is already joined."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    if "  " in text or text[:1].isspace() or text[-1:].isspace() or not text.replace("\x00", "").isprintable():
        return " ".join(text.split())
    return text
