"""Per-row work that needs no cross-row state: parse, convert, clean, validate turns and characters,
redact, and compute the dedupe key. The same `RowProcessor` runs inline or in worker processes (for big
inputs), so both modes give byte-identical output; everything with cross-row state (dedupe sets, split,
token batches, statistics) stays in the main process.

A processed row is a tuple: `(key, chars, line, roles, answer, normal)` where `line` is the canonical JSON
line to write, `roles` the first letters of its turns' roles (for statistics), `answer` the last turn when it
looks like a JSON object (for the label distribution), `normal` the dedupe normal form when near dedupe
needs it; or a `RowError`.

For JSONL, `process_chunk` takes a whole line-aligned blob of the file and returns a compact `ChunkResult`
(packed arrays, one blob of canonical lines, finished reject records): shipping bytes to and from workers
instead of per-row tuples is what keeps the main process light.
"""

from __future__ import annotations

from array import array
from collections import Counter
from itertools import accumulate
from typing import Any, NamedTuple

import xxhash

from tuneops.api.dataset import DatasetSpec

from .checks import check_chars, check_turns
from .cleaning import build_cleaner, dedupe_text, memoized, normal_form
from .dedupe import row_hash
from .errors import RowError
from .formats import OPENAI_ROLES, Converter
from .jsonfast import JSONDecodeError, dumps, dumps_lenient, loads
from .pii import Redactor

ProcessedRow = tuple[int, int, bytes, str, "str | None", "str | None"]
INV_2_64 = 1.0 / 2.0 ** 64
xxh3_64 = xxhash.xxh3_64_intdigest  # row_hash, inlined in the fused path


class Unparsed:
    """Marks a JSONL row whose bytes are still to be parsed (in the processor, so workers do it)."""

    __slots__ = ("terminated",)

    def __init__(self, terminated: bool = True):
        self.terminated = terminated


UNPARSED = Unparsed(True)
UNTERMINATED = Unparsed(False)  # the file's last line had no newline: a parse error hints at truncation


def reject_record(uri: str, line: int, err: RowError, row: Any, raw: bytes | None = None) -> bytes:
    """One rejects.jsonl record (without the newline). A JSONL row is shown parsed when it parses, else as
    text; a row too deep to re-encode is kept as it was read."""
    if type(row) is Unparsed:
        try:
            row = loads(raw)
        except (JSONDecodeError, RecursionError, ValueError):
            row = raw.decode("utf-8", "backslashreplace")
    record = {"source": uri, "line": line, "reason": err.reason, "field": err.field, "message": err.message,
              "row": row}
    try:
        return dumps_lenient(record)
    except (RecursionError, ValueError, TypeError):
        record["row"] = raw.decode("utf-8", "backslashreplace") if raw is not None else repr(type(row))
        return dumps_lenient(record)


class ChunkResult(NamedTuple):
    """What processing one JSONL blob gives back: compact, so shipping it from a worker costs little.
    Per kept-so-far row ("ok" rows, in order): its line number, dedupe key and split position as packed
    arrays, chars and roles as lists, the canonical lines as one blob with end offsets; answers that may be
    JSON labels sparsely by index; rejected rows as finished rejects.jsonl records."""

    rows: int                    # non-blank lines
    blank: int                   # blank lines
    redactions: Counter
    line_nos: bytes              # array('Q')
    keys: bytes                  # array('Q')
    u: bytes                     # array('d'): split position
    chars: list[int]
    roles: list[str]
    answers: dict[int, str]
    normals: list[str] | None    # near dedupe only
    lines: bytes
    ends: bytes                  # array('Q'): end offset of each row's line in `lines`
    errors: list[tuple[int, str, bytes]]  # (line, reason, record)


def parse_line(raw: bytes, marker: Unparsed) -> Any:
    try:
        return loads(raw)
    except (JSONDecodeError, RecursionError, ValueError) as exc:
        from .readers import bad_json_line  # here, not per row: an import statement costs ~1 us

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
        self.seed = spec.split.seed
        # openai-messages rows that need nothing but cleaning take a fused path (no converter, no separate
        # checks); anything unusual falls back to the general path, which then names the problem.
        f = self.convert.fields
        self.fast_keys = (f["messages"], f["role"], f["content"]) if (
            spec.format == "openai-messages" and spec.system_prompt is None and self.redactor is None
            and "." not in f["messages"]) else None

    def process(self, obj: Any, raw: bytes | None) -> ProcessedRow:
        """Raises RowError for a row to reject."""
        if type(obj) is Unparsed:
            obj = parse_line(raw, obj)
        if self.fast_keys is not None:
            done = self.process_fast(obj)
            if done is not None:
                return done
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

    def process_fast(self, obj: Any) -> ProcessedRow | None:
        """`process` for a well-formed openai-messages row, fused: the same result, or None to take the
        general path (bad shape, roles out of order, an empty turn, a length filter: anything to reject)."""
        if type(obj) is not dict:
            return None
        column, role_key, content_key = self.fast_keys
        turns = obj.get(column)
        if type(turns) is not list or not turns:
            return None
        clean, clean_system = self.clean, self.clean_system
        messages, parts = [], []
        chars, expected = 0, "user"
        for i, item in enumerate(turns):
            if type(item) is not dict:
                return None
            role, text = item.get(role_key), item.get(content_key)
            if type(role) is not str or type(text) is not str:
                return None
            role = OPENAI_ROLES.get(role)
            if role == "system" and not i:
                text = clean_system(text)
            elif role == expected:  # user/assistant alternating from user (check_turns)
                expected = "assistant" if role == "user" else "user"
                text = clean(text)
            else:
                return None
            if not text or text.isspace():
                return None
            chars += len(text)
            messages.append({"role": role, "content": text})
            parts.append(role[0] + ":" + text)
        if (self.require_assistant and messages[-1]["role"] != "assistant") or chars < self.min_chars or (
                self.max_chars is not None and chars > self.max_chars):
            return None
        normal = normal_form("\x00".join(parts))  # = dedupe_text(messages)
        try:
            line = dumps({"messages": messages}) + b"\n"
        except (TypeError, ValueError, UnicodeEncodeError):  # lone surrogates: the general path says so
            return None
        return (xxh3_64(normal.encode("utf-8", "surrogatepass")), chars, line, "".join([p[0] for p in parts]),
                text if text[:1] == "{" else None, normal if self.want_normal else None)

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

    def process_chunk(self, blob: bytes, first_line: int, uri: str) -> ChunkResult:
        """Every line of a line-aligned JSONL blob (see readers.iter_jsonl_blobs): the same per-line rules
        as readers.split_lines + _iter_jsonl (CRLF, blank lines, an unterminated last line), then
        `process`, with results packed for the trip back to the main process."""
        lines = blob.split(b"\n")
        unterminated = -1
        if lines[-1]:  # the blob (the file) ends without a newline
            unterminated = len(lines) - 1
        else:
            lines.pop()
        redactor = self.redactor
        if redactor is not None:
            before, redactor.counts = redactor.counts, Counter()
        process = self.process
        fast = self.process_fast if self.fast_keys is not None else None
        ok: list = []
        nos: list[int] = []
        errors: list = []
        blank = 0
        line_no = first_line - 1
        for i, raw in enumerate(lines):
            line_no += 1
            if raw[-1:] == b"\r":  # CRLF files
                raw = raw[:-1]
            if not raw or raw.isspace():
                blank += 1
                continue
            marker = UNTERMINATED if i == unterminated else UNPARSED
            try:
                done = None
                if fast is not None:  # `process`, minus two calls per row; any trouble goes the long way
                    try:
                        done = fast(loads(raw))
                    except (JSONDecodeError, RecursionError, ValueError):
                        pass
                ok.append(done if done is not None else process(marker, raw))
            except RowError as err:
                errors.append((line_no, err.reason, reject_record(uri, line_no, err, marker, raw)))
                continue
            nos.append(line_no)
        redactions = Counter()
        if redactor is not None:
            redactions, redactor.counts = redactor.counts, before
        if not ok:
            return ChunkResult(len(ok) + len(errors), blank, redactions, b"", b"", b"", [], [], {}, None, b"", b"",
                               errors)
        keys, chars, out, roles, answers, normals = zip(*ok)
        seed, xxh3 = self.seed, xxhash.xxh3_64_intdigest  # the split position, as pipeline.emit computes it
        u = array("d", [xxh3(k.to_bytes(8, "little"), seed=seed) * INV_2_64 for k in keys])
        return ChunkResult(
            len(ok) + len(errors), blank, redactions, array("Q", nos).tobytes(), array("Q", keys).tobytes(),
            u.tobytes(), list(chars), list(roles), {i: a for i, a in enumerate(answers) if a is not None},
            list(normals) if self.want_normal else None, b"".join(out),
            array("Q", accumulate(map(len, out))).tobytes(), errors)


# --- worker process side ---------------------------------------------------------------------------------
_worker: RowProcessor | None = None


def init_worker(spec_json: str) -> None:
    global _worker
    _worker = RowProcessor(DatasetSpec.model_validate_json(spec_json))


def run_batch(batch: list[tuple[Any, bytes | None]]) -> tuple[list[Any], Counter[str]]:
    assert _worker is not None
    return _worker.process_batch(batch)


def run_chunk(blob: bytes, first_line: int, uri: str) -> ChunkResult:
    assert _worker is not None
    return _worker.process_chunk(blob, first_line, uri)


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
