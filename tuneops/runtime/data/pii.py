"""PII redaction: emails, phone numbers, IP addresses and secret keys become placeholders.

Patterns are deliberately conservative about phone numbers (9-15 digits with separators or a leading +)
so dates, versions, prices and order numbers survive; keys are matched by their well-known prefixes
(AWS, GitHub, Slack, OpenAI-style sk-, Google API, JWT, PEM private keys) or an explicit
`password=`/`api_key:` label followed by a value of 8+ characters with a digit (so "password: production
is down" stays), whose label is kept and value replaced.
"""

from __future__ import annotations

import re
from collections import Counter

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "ip": "[IP]", "key": "[KEY]"}

_KEY_PATTERNS = [
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{40,}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",
    r"\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}",
    r"\bAIza[0-9A-Za-z_-]{35}\b",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]
_PII = re.compile(
    "(?P<key>" + "|".join(_KEY_PATTERNS) + ")"
    r"|(?P<label>\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<labelled>(?=[^\s\"',;]*\d)[^\s\"',;]{8,})"
    r"|(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)"
    r"|(?P<ip>\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b)"
    r"|(?P<phone>(?<![\w+.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w.-]\d)"
    r"|(?<![\w+])\+\d{9,15}\b)",
    re.S | re.I,
)
_DIGIT_RUN = re.compile(r"\d{3}")
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


class Redactor:
    """Callable text -> text; `counts` tallies what was replaced, for the manifest."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "labelled":
            self.counts["key"] += 1
            return match.group("label") + PLACEHOLDERS["key"]
        if kind == "phone":
            text = match.group(0)
            digits = sum(c.isdigit() for c in text)
            if not 9 <= digits <= 15 or _DATE_LIKE.match(text):
                return text
        self.counts[kind] += 1
        return PLACEHOLDERS[kind]

    def __call__(self, text: str) -> str:
        # Every pattern needs '@', a run of 3 digits or a key prefix/label: skip the regex when none can match.
        if "@" not in text and not _DIGIT_RUN.search(text) and not _maybe_key(text):
            return text
        return _PII.sub(self._replace, text)


_KEY_HINTS = ("AKIA", "ASIA", "gh", "xox", "sk-", "AIza", "eyJ", "-----BEGIN", "=", ":")


def _maybe_key(text: str) -> bool:
    return any(h in text for h in _KEY_HINTS)
