"""Per-row work that needs no cross-row state: parse, convert, clean, validate turns and characters,
redact, and compute the dedupe key. The same `RowProcessor` runs inline or in worker processes (for big
inputs), so both modes give byte-identical output; everything with cross-row state (dedupe sets, split,
token batches, statistics) stays in the main process.

A processed row is a tuple: `(key, chars, line, roles, answer, normal)` where `line` is the canonical JSON
line to write, `roles` the first letters of its turns' roles (for statistics), `answer` the last turn when it
looks like a JSON object (for the label distribution), `normal` the dedupe normal form when near dedupe
needs it; or a `RowError`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tuneops.api.dataset import DatasetSpec

from .checks import check_chars, check_turns
from .cleaning import build_cleaner, dedupe_text, memoized
from .dedupe import row_hash
from .errors import RowError
from .formats import Converter
from .jsonfast import JSONDecodeError, dumps, loads
from .pii import Redactor

ProcessedRow = tuple[int, int, bytes, str, "str | None", "str | None"]


class Unparsed:
    """Marks a JSONL row whose bytes are still to be parsed (in the processor, so workers do it)."""

    __slots__ = ("terminated",)

    def __init__(self, terminated: bool = True):
        self.terminated = terminated


UNPARSED = Unparsed(True)
UNTERMINATED = Unparsed(False)  # the file's last line had no newline: a parse error hints at truncation


def parse_line(raw: bytes, marker: Unparsed) -> Any:
    from .readers import bad_json_line

    try:
        return loads(raw)
    except (JSONDecodeError, RecursionError, ValueError) as exc:
        raise bad_json_line(raw, exc, marker.terminated) from None


class RowProcessor:
    def __init__(self, spec: DatasetSpec):
        c, v = spec.cleaning, spec.validation
        self.convert = Converter(spec.format, spec.fields, spec.system_prompt)
        self.clean = build_cleaner(c)
        self.clean_system = memoized(self.clean)
        self.redactor = Redactor() if c.redact_pii else None
        self.require_assistant = v.require_assistant_turn
        self.assistant_first = spec.format == "text"
        self.min_chars, self.max_chars = c.min_chars, c.max_chars
        self.want_normal = c.dedupe == "near"

    def process(self, obj: Any, raw: bytes | None) -> ProcessedRow:
        """Raises RowError for a row to reject."""
        if type(obj) is Unparsed:
            obj = parse_line(raw, obj)
        messages = self.convert(obj)
        clean, clean_system = self.clean, self.clean_system
        chars = 0
        for m in messages:
            m["content"] = text = (clean_system if m["role"] == "system" else clean)(m["content"])
            chars += len(text)
        check_turns(messages, self.convert.field_of, require_assistant=self.require_assistant,
                    assistant_first=self.assistant_first)
        check_chars(chars, self.min_chars, self.max_chars)
        if self.redactor is not None:
            for m in messages:
                m["content"] = self.redactor(m["content"])
        normal = dedupe_text(messages)
        try:
            line = dumps({"messages": messages}) + b"\n"
        except (TypeError, ValueError, UnicodeEncodeError):  # e.g. lone surrogates with stripControlChars off
            raise RowError("invalid_unicode", "text cannot be encoded as UTF-8 (lone surrogates?)") from None
        last = messages[-1]["content"]
        return (row_hash(normal), chars, line, "".join([m["role"][0] for m in messages]),
                last if last[:1] == "{" else None, normal if self.want_normal else None)

    def process_batch(self, batch: list[tuple[Any, bytes | None]]) -> tuple[list[Any], Counter[str]]:
        """For worker processes: results in order, plus the redactions counted in this batch."""
        out: list[Any] = []
        for obj, raw in batch:
            try:
                out.append(self.process(obj, raw))
            except RowError as err:
                out.append(err)
        counts = Counter()
        if self.redactor is not None:
            counts, self.redactor.counts = self.redactor.counts, Counter()
        return out, counts


# --- worker process side ---------------------------------------------------------------------------------
_worker: RowProcessor | None = None


def init_worker(spec_json: str) -> None:
    global _worker
    _worker = RowProcessor(DatasetSpec.model_validate_json(spec_json))


def run_batch(batch: list[tuple[Any, bytes | None]]) -> tuple[list[Any], Counter[str]]:
    assert _worker is not None
    return _worker.process_batch(batch)


def pack_lines(batch: list[tuple[Any, bytes | None]]) -> tuple[bytes, int] | None:
    """A batch of terminated JSONL lines as one blob: pickling one bytes object instead of thousands of
    (marker, bytes) tuples is most of the cost of shipping work to a worker."""
    if any(obj is not UNPARSED for obj, _ in batch):
        return None
    return b"\n".join([raw for _, raw in batch]), len(batch)


def run_packed(packed: tuple[bytes, int]) -> tuple[list[Any], Counter[str]]:
    blob, n = packed
    if n == 0:  # every row of the batch already failed in the reader
        return [], Counter()
    lines = blob.split(b"\n")
    assert len(lines) == n  # JSONL lines never contain a raw newline
    return run_batch([(UNPARSED, raw) for raw in lines])
