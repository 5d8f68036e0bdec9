"""Read dataset rows from JSONL, JSON, CSV/TSV, Parquet or a saved `datasets` directory, locally or through
any fsspec URI (s3://, gs://, file://, ...).

Every reader streams (JSONL, CSV and Parquet never hold more than one chunk or batch in memory) and yields
`(line, obj, error, raw)` tuples: `line` is the 1-based line where the row starts (JSONL, JSON, CSV) or its row
number (Parquet, datasets); `error` is a `RowError` when the row could not be read, in which case `obj` is
the raw text so the rejects file keeps it. JSONL rows come unparsed: `obj` is `rowproc.UNPARSED` and `raw`
the line's bytes (parsing is per-row work, done where the rest of the row's work is done). Problems with the file as a whole raise `DataError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import DataError, RowError

RowTuple = tuple[int, Any, "RowError | None", "bytes | None"]

CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".lz4": "lz4"}
_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".json": "json", ".csv": "csv",
          ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
_DATASETS_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
# {"data": [...]}-style wrappers around the row array (a bare {"messages": [...]} is one row, not a wrapper).
_WRAPPER_KEYS = frozenset({"data", "rows", "records", "examples", "items", "train"})
_SURROGATE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" turns invalid UTF-8 bytes into
SOURCE_FIELD = "spec.dataset.source"


@dataclass
class SourceFile:
    """One file (or datasets folder) to read; `uri` is what messages and the manifest show."""

    uri: str
    fs: Any
    path: str
    kind: str  # jsonl | json | csv | parquet | datasets
    compression: str | None = None
    delimiter: str = ","


@dataclass
class SourceStats:
    """Filled while a source is read: its hash for the manifest and counts for the data card."""

    uri: str
    sha256: str = ""
    bytes: int = 0
    rows: int = 0
    blank_lines: int = 0
    columns: list[str] = field(default_factory=list)


def _kind_of(name: str) -> tuple[str | None, str | None]:
    lower = name.lower()
    compression = None
    for suffix, codec in _COMPRESSION.items():
        if lower.endswith(suffix):
            compression, lower = codec, lower[: -len(suffix)]
            break
    return _KINDS.get(Path(lower).suffix), compression


def resolve_sources(source: str, base_dir: Path | None = None) -> list[SourceFile]:
    """Expand `spec.dataset.source` into the files to read (a glob or a folder gives several, sorted)."""
    import fsspec

    if "://" in source:
        uri = source
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        uri = str(path)
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its fsspec backend is not installed
        raise DataError(f"cannot open {uri}: {exc}", source=uri, field=SOURCE_FIELD) from exc
    def display(p: str) -> str:  # the source as written for the file it names, full paths for expansions
        if p == path:
            return uri
        return fs.unstrip_protocol(p) if "://" in source else p

    try:
        if any(ch in path for ch in "*?["):
            paths = sorted(p for p in fs.glob(path) if _kind_of(p)[0])
            if not paths:
                raise DataError("the pattern matches no .jsonl/.json/.csv/.tsv/.parquet file", source=uri,
                                field=SOURCE_FIELD)
            return [_file(fs, p, display(p)) for p in paths]
        if fs.isdir(path):
            names = {Path(p).name for p in fs.ls(path, detail=False)}
            if any(m in names for m in _DATASETS_MARKERS):
                return [SourceFile(display(path), fs, path, "datasets")]
            paths = sorted(p for p in fs.ls(path, detail=False)
                           if not Path(p).name.startswith(".") and _kind_of(p)[0] and fs.isfile(p))
            if not paths:
                raise DataError("folder has no .jsonl/.json/.csv/.tsv/.parquet file and is not a saved "
                                "`datasets` folder", source=uri, field=SOURCE_FIELD)
            return [_file(fs, p, display(p)) for p in paths]
        if not fs.exists(path):
            raise DataError("no such file", source=uri, field=SOURCE_FIELD)
        return [_file(fs, path, display(path))]
    except DataError:
        raise
    except Exception as exc:  # credentials, network, permissions: say which source
        raise DataError(f"cannot read: {type(exc).__name__}: {exc}", source=uri, field=SOURCE_FIELD) from exc


def _file(fs: Any, path: str, uri: str) -> SourceFile:
    kind, compression = _kind_of(path)
    if kind is None:
        raise DataError("cannot tell the file type from its name; use .jsonl, .json, .csv, .tsv or .parquet "
                        "(optionally .gz/.bz2/.xz/.zst), or a saved `datasets` folder", source=uri,
                        field=SOURCE_FIELD)
    delimiter = "\t" if path.lower().removesuffix("." + (compression or "")).endswith(".tsv") else ","
    return SourceFile(uri, fs, path, kind, compression, delimiter)


class _HashingReader(io.RawIOBase):
    """Hashes the bytes as stored while they are read, so the manifest's source hash costs no extra pass."""

    def __init__(self, raw: BinaryIO, stats: SourceStats):
        self._raw, self._stats, self._sha = raw, stats, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._sha.update(data)
        self._stats.bytes += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._sha.update(data)
        self._stats.bytes += len(data)
        return data

    def finish(self) -> None:
        while self.read(CHUNK):  # a reader that stopped early (maxSamples) still hashes the whole file
            pass
        self._stats.sha256 = "sha256:" + self._sha.hexdigest()


def _open_stream(sf: SourceFile, stats: SourceStats) -> tuple[_HashingReader, BinaryIO, Any]:
    raw = sf.fs.open(sf.path, "rb")
    hashing = _HashingReader(raw, stats)
    stream: BinaryIO = hashing  # type: ignore[assignment]
    if sf.compression:
        from fsspec.compression import compr

        stream = compr[sf.compression](io.BufferedReader(hashing, CHUNK), mode="rb")
    return hashing, stream, raw


def iter_rows(sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    """Yield every row of one source. Blank lines are skipped (and counted in `stats.blank_lines`)."""
    if sf.kind == "parquet":
        yield from _iter_parquet(sf, stats)
        return
    if sf.kind == "datasets":
        yield from _iter_datasets(sf, stats)
        return
    hashing, stream, raw = _open_stream(sf, stats)
    try:
        reader = {"jsonl": _iter_jsonl, "json": _iter_json, "csv": _iter_csv}[sf.kind]
        yield from reader(stream, sf, stats)
        hashing.finish()
    finally:
        stream.close()
        raw.close()


def iter_jsonl_blobs(sf: SourceFile, stats: SourceStats) -> Iterator[tuple[int, bytes]]:
    """A JSONL source as `(first_line, blob)`: line-aligned pieces of about CHUNK bytes (every blob but the
    file's last ends with a newline; a line longer than a chunk is joined once), BOM removed. Whoever
    splits a blob into rows (RowProcessor.process_chunk) counts stats.rows/blank_lines; this side only
    reads and hashes, so the main process stays light while workers do the per-line work."""
    hashing, stream, raw = _open_stream(sf, stats)
    try:
        line, parts, first = 1, [], True
        while chunk := stream.read(CHUNK):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                parts.append(chunk)
                continue
            parts.append(chunk[:cut] if cut < len(chunk) else chunk)
            blob = b"".join(parts)
            parts = [chunk[cut:]] if cut < len(chunk) else []
            if first:
                first = False
                blob = blob[3:] if blob.startswith(_BOM) else blob
            yield line, blob
            line += blob.count(b"\n")
        if parts:
            blob = b"".join(parts)
            if first and blob.startswith(_BOM):
                blob = blob[3:]
            if blob:
                yield line, blob
        hashing.finish()
    finally:
        stream.close()
        raw.close()


def split_lines(stream: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Yield `(line, terminated)` without the newline. Reads in 1 MiB chunks; a line longer than a chunk
    is joined once (no quadratic copying), so a 10 MB row costs what its size costs."""
    pending: list[bytes] = []
    while chunk := stream.read(CHUNK):
        cut = chunk.find(b"\n")
        if cut < 0:
            pending.append(chunk)
            continue
        if pending:
            pending.append(chunk[:cut])
            yield b"".join(pending), True
            pending = []
        else:
            yield chunk[:cut], True
        lines = chunk[cut + 1:].split(b"\n")
        tail = lines.pop()
        for line in lines:
            yield line, True
        if tail:
            pending = [tail]
    if pending:
        yield b"".join(pending), False


def bad_json_line(line: bytes, exc: Exception, terminated: bool) -> RowError:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return RowError("invalid_utf8", f"invalid UTF-8 at byte {bad.start} of the line")
    message = str(exc)
    # orjson/json say "line 1 column C": a JSONL row is one line, keep the column only.
    message = re.sub(r":? line 1 column (\d+) \(char \d+\)", r" at column \1", message)
    if not terminated:
        message += " (last line has no newline: truncated file?)"
    return RowError("invalid_json", f"invalid JSON: {message}")


def _iter_jsonl(stream: BinaryIO, sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    """Yields rows unparsed (`UNPARSED` + the line's bytes): parsing happens in the row processor, which
    may run in worker processes. `UNTERMINATED` marks a last line without a newline."""
    from .rowproc import UNPARSED, UNTERMINATED

    line_no = 0
    for line, terminated in split_lines(stream):
        line_no += 1
        if line_no == 1 and line.startswith(_BOM):
            line = line[3:]
        if line.endswith(b"\r"):  # CRLF files
            line = line[:-1]
        if not line or line.isspace():
            stats.blank_lines += 1
            continue
        stats.rows += 1
        yield line_no, UNPARSED if terminated else UNTERMINATED, None, line


def _iter_json(stream: BinaryIO, sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    """A JSON document: an array of rows (parsed element by element, with line numbers), an object holding
    one array of rows (e.g. {"data": [...]}), a single row, or JSON Lines saved as .json."""
    data = stream.read()
    if data.startswith(_BOM):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", source=sf.uri,
                        line=data.count(b"\n", 0, exc.start) + 1) from exc
    del data
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text).end()
    if pos == len(text):
        return
    line, line_pos = 1, 0

    def line_at(p: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, p)
        line_pos = p
        return line

    try:
        if text[pos] != "[":
            first, end = decoder.raw_decode(text, pos)
            rest = ws.match(text, end).end()
            if rest < len(text):  # more values follow: JSON Lines in a .json file
                yield from _iter_jsonl(io.BytesIO(text.encode("utf-8")), sf, stats)
                return
            rows = [first]
            if isinstance(first, dict) and len(first) == 1:
                (key, value), = first.items()
                if key in _WRAPPER_KEYS and isinstance(value, list):
                    rows = value
            for i, row in enumerate(rows, start=1):
                stats.rows += 1
                yield i, row, None, None
            return
        pos = ws.match(text, pos + 1).end()
        if text.startswith("]", pos):
            return
        while True:
            pos = ws.match(text, pos).end()
            start_line = line_at(pos)
            row, pos = decoder.raw_decode(text, pos)
            stats.rows += 1
            yield start_line, row, None, None
            pos = ws.match(text, pos).end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] == "]":
                break
            else:
                raise json.JSONDecodeError("expected ',' or ']' after an array element", text, pos)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at column {exc.colno}: {exc.msg}", source=sf.uri, line=exc.lineno) from exc
    except RecursionError as exc:
        raise DataError("invalid JSON: nested too deeply", source=sf.uri, line=line_at(pos)) from exc


def _iter_csv(stream: BinaryIO, sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    # surrogateescape keeps invalid UTF-8 readable so one bad row is rejected instead of the whole file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 1 << 31 - 1)))  # 10 MB cells are fine
    reader = csv.reader(text, delimiter=sf.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataError(f"invalid CSV header: {exc}", source=sf.uri, line=1) from exc
    if any(_SURROGATE.search(h) for h in header):
        raise DataError("invalid UTF-8 in the header", source=sf.uri, line=1)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column name(s) in the header: {', '.join(dupes)}", source=sf.uri, line=1)
    stats.columns = header
    prev = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start, prev = prev + 1, reader.line_num
            stats.rows += 1
            yield start, None, RowError("invalid_csv", f"invalid CSV: {exc}"), None
            continue
        start, prev = prev + 1, reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            stats.blank_lines += 1
            continue
        stats.rows += 1
        raw = dict(zip(header, values))
        if len(values) != len(header):
            error = RowError("invalid_csv", f"{len(values)} fields but the header has {len(header)}")
            yield start, values, error, None
            continue
        bad = next((h for h, v in raw.items() if _SURROGATE.search(v)), None)
        if bad is not None:
            shown = {h: v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                     for h, v in raw.items()}
            yield start, shown, RowError("invalid_utf8", "invalid UTF-8", field=bad), None
            continue
        yield start, raw, None, None


def hash_source(sf: SourceFile) -> str:
    """sha256 of a source as stored; for a datasets folder, of its files' relative names and bytes."""
    sha = hashlib.sha256()
    paths = [sf.path]
    if sf.kind == "datasets":
        paths = sorted(p for p in sf.fs.find(sf.path) if not Path(p).name.startswith("."))
    for p in paths:
        if sf.kind == "datasets":
            sha.update(p[len(sf.path):].lstrip("/").encode() + b"\0")
        with sf.fs.open(p, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _iter_parquet(sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with sf.fs.open(sf.path, "rb") as fh:
        try:
            pf = pq.ParquetFile(fh)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file: {exc}", source=sf.uri) from exc
        stats.columns = list(pf.schema_arrow.names)
        stats.bytes = sf.fs.size(sf.path)
        row = 0
        for batch in pf.iter_batches(batch_size=2048):
            for obj in batch.to_pylist():
                row += 1
                stats.rows += 1
                yield row, obj, None, None
    stats.sha256 = hash_source(sf)


def _iter_datasets(sf: SourceFile, stats: SourceStats) -> Iterator[RowTuple]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(sf.path if sf.fs.protocol in ("file", ("file", "local")) else sf.uri,
                            storage_options=getattr(sf.fs, "storage_options", None) or None)
    except Exception as exc:
        raise DataError(f"not a readable saved `datasets` folder: {exc}", source=sf.uri) from exc
    if isinstance(ds, DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise DataError(f"a DatasetDict without a 'train' split (splits: {', '.join(ds)}); point source at "
                            "one split's folder", source=sf.uri, field=SOURCE_FIELD)
    stats.columns = list(ds.column_names)
    row = 0
    for batch in ds.with_format("arrow").iter(batch_size=2048):
        for obj in batch.to_pylist():
            row += 1
            stats.rows += 1
            yield row, obj, None, None
    stats.sha256 = hash_source(sf)
