"""Errors of the data pipeline.

Two kinds: a `DataError` stops the whole preparation (missing file, unparsable JSON document, too many
rejects) and always names the file, and where it can the line and the spec field. A `RowError` rejects one
row: it never stops the run, the row goes to rejects.jsonl with its reason, field and line.
"""

from __future__ import annotations

# Reasons a row can be rejected. INVALID reasons are data errors and count towards
# validation.maxRejectedFraction; FILTERED reasons are the cleaning rules doing their job (duplicates,
# length filters) and are reported but do not fail the job.
INVALID_REASONS = frozenset({
    "invalid_utf8", "invalid_json", "invalid_csv", "not_an_object", "missing_field", "wrong_type",
    "bad_role", "role_order", "empty_turn", "no_assistant_turn", "unsupported_content", "invalid_unicode",
    "too_long",
})
FILTERED_REASONS = frozenset({
    "duplicate", "near_duplicate", "too_short", "too_long_chars", "too_few_tokens", "too_many_tokens",
})


class DataError(Exception):
    """The preparation cannot go on. `str()` reads `file:line: field: message`."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message, self.source, self.line, self.field = message, source, line, field
        where = ""
        if source:
            where = source + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + (f"{field}: " if field else "") + message)

    def __reduce__(self):  # picklable with its fields (worker processes)
        return (_make_data_error, (self.message, self.source, self.line, self.field))


def _make_data_error(message: str, source: str | None, line: int | None, field: str | None) -> DataError:
    return DataError(message, source=source, line=line, field=field)


class RowError(Exception):
    """One row is invalid or filtered out; `reason` is one of INVALID_REASONS or FILTERED_REASONS."""

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field

    def __reduce__(self):  # picklable with its fields: rows are processed in worker processes
        return (RowError, (self.reason, self.message, self.field))
