"""Atomic file writes for the runtime: the implementation lives in `tuneops.atomic` (stdlib only, shared with
the CLI's manifest writer); this module keeps the runtime's import path."""

from tuneops.atomic import read_json, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["read_json", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
