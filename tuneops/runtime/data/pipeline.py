"""`prepare_dataset`: read -> convert -> clean -> validate -> redact -> dedupe -> token checks -> split ->
write, streaming, into a content-addressed, atomically published folder.

Every row read ends up in exactly one of train/validation/test or rejects.jsonl (kept + rejected == read);
the manifest says so and the tests hold it to that.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import shutil
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import xxhash

from tuneops.api.dataset import DatasetSpec

from .cleaning import dedupe_text
from .dedupe import ExactDeduper, NearDeduper, row_hash
from .errors import FILTERED_REASONS, INVALID_REASONS, DataError, RowError
from .formats import Converter, missing_columns
from .jsonfast import dumps, loads
from .readers import SourceFile, SourceStats, hash_source, iter_jsonl_blobs, iter_rows, resolve_sources
from .pii import Redactor
from .rowproc import (UNPARSED, ChunkResult, RowProcessor, Unparsed, init_worker, pack_lines, parse_line,
                      reject_record, run_batch, run_chunk, run_packed)
from .stats import Distributions
from .tokens import TokenCounter, tokenizer_fingerprint

PIPELINE_VERSION = "tuneops-data/1"  # bump when the processing changes what comes out for the same input
SPLITS = ("train", "validation", "test")
_INV_2_64 = 1.0 / 2.0 ** 64
TOKEN_BATCH = 256
WORKER_BATCH = 2048
WORKERS_MIN_BYTES = 64 << 20


@dataclass(frozen=True)
class PreparedDataset:
    out_dir: Path
    train_path: Path
    validation_path: Path
    test_path: Path
    manifest: dict[str, Any]
    version: str
    reused: bool = False

    @property
    def rejects_path(self) -> Path:
        return self.out_dir / "rejects.jsonl"

    @property
    def datacard_path(self) -> Path:
        return self.out_dir / "datacard.md"

    def rows(self, split: str = "validation", limit: int | None = None) -> list[dict[str, Any]]:
        """The canonical rows of one split (for evaluation); `limit` caps how many are read."""
        path = {"train": self.train_path, "validation": self.validation_path, "test": self.test_path}[split]
        out = []
        with path.open("rb") as fh:
            for line in fh:
                if limit is not None and len(out) >= limit:
                    break
                out.append(loads(line))
        return out


def config_of(spec: DatasetSpec, max_seq_length: int | None, tokenizer: Any) -> dict[str, Any]:
    """Everything besides the data that decides the output. The source location is left out on purpose:
    the same bytes moved elsewhere are the same dataset."""
    return {
        "pipeline": PIPELINE_VERSION,
        "dataset": spec.model_dump(mode="json", by_alias=True, exclude={"source"}),
        "maxSeqLength": max_seq_length,
        "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
    }


def _sha256_json(obj: Any) -> str:
    import json

    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class _Output:
    """One JSONL output file: written once, hashed and counted as it is written. Lines are buffered and
    written (and hashed: sha256 of the concatenation is the same) 1024 at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = path.open("wb", buffering=1 << 20)
        self.sha = hashlib.sha256()
        self.rows = 0
        self.buffer: list[bytes] = []
        self.write = self.buffer.append  # hot path: a bound list.append, flushed by the pipeline

    def write_lines(self, data: bytes, n: int) -> None:
        """`n` lines at once (flush counts one row per buffered item)."""
        self.buffer.append(data)
        self.rows += n - 1

    def flush(self) -> None:
        if self.buffer:
            data = b"".join(self.buffer)
            self.rows += len(self.buffer)
            self.buffer.clear()
            self.fh.write(data)
            self.sha.update(data)

    def close(self) -> None:
        self.flush()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": "sha256:" + self.sha.hexdigest()}


@dataclass
class _Counts:
    read: int = 0
    kept: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        return sum(n for r, n in self.by_reason.items() if r in INVALID_REASONS)

    @property
    def filtered(self) -> int:
        return sum(n for r, n in self.by_reason.items() if r in FILTERED_REASONS)


class _Splitter:
    """Hash-based split: a row's bucket depends only on its content and the seed, so reordering or
    appending rows never moves an existing row to another split. Identical (normalised) rows always share
    a split, which is what makes train/validation leakage impossible by construction."""

    def __init__(self, validation: float, test: float, seed: int, max_validation: int | None):
        self.validation, self.test, self.seed, self.max_validation = validation, test, seed, max_validation

    def bucket(self, key: int) -> tuple[str, float]:
        u = xxhash.xxh3_64_intdigest(key.to_bytes(8, "little"), seed=self.seed) * _INV_2_64
        if u < self.validation:
            return "validation", u
        if u < self.validation + self.test:
            return "test", u
        return "train", u


def prepare_dataset(spec: DatasetSpec, *, out_dir: Path, base_dir: Path | None = None, tokenizer: Any = None,
                    max_seq_length: int | None = None, progress: bool | None = None,
                    reuse: bool = True, workers: int | None = None) -> PreparedDataset:
    """Prepare `spec`'s dataset into `out_dir` (see docs/dev/contracts.md, "Data"). Raises DataError for
    problems with the input as a whole, including more rejected rows than validation.maxRejectedFraction.
    `workers`: processes for the per-row work (None: several for inputs over 64 MiB, else inline; the
    output is byte-identical either way). $TUNEOPS_DATA_WORKERS overrides the automatic choice."""
    out_dir = Path(out_dir)
    c = spec.cleaning
    if tokenizer is None and (c.min_tokens is not None or c.max_tokens is not None):
        name = "spec.dataset.cleaning." + ("minTokens" if c.min_tokens is not None else "maxTokens")
        raise DataError("token filters need the model's tokenizer (none was given)", field=name)
    config = config_of(spec, max_seq_length, tokenizer)
    config_hash = _sha256_json(config)
    sources = resolve_sources(spec.source, base_dir)
    if reuse:
        previous = _reusable(out_dir, config_hash, sources)
        if previous is not None:
            return previous
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        manifest = _run(spec, sources, tmp, tokenizer, max_seq_length, progress, config, config_hash, workers)
        failure = manifest.get("failure")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failure:
        raise DataError(failure + f" (see {out_dir / 'rejects.jsonl'})",
                        source=spec.source, field="spec.dataset.validation.maxRejectedFraction"
                        if "maxRejectedFraction" in failure else None)
    return _prepared(out_dir, manifest)


def _prepared(out_dir: Path, manifest: dict[str, Any], reused: bool = False) -> PreparedDataset:
    return PreparedDataset(out_dir, out_dir / "train.jsonl", out_dir / "validation.jsonl", out_dir / "test.jsonl",
                           manifest, manifest["version"], reused)


def _reusable(out_dir: Path, config_hash: str, sources: list[SourceFile]) -> PreparedDataset | None:
    """The previous output when config and source bytes are unchanged and its files are intact."""
    try:
        manifest = loads((out_dir / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None
    if manifest.get("status") != "ok" or manifest.get("configHash") != config_hash:
        return None
    recorded = [(s["uri"], s["sha256"]) for s in manifest.get("sources", [])]
    if [s.uri for s in sources] != [u for u, _ in recorded]:
        return None
    if any(hash_source(s) != h for s, (_, h) in zip(sources, recorded)):
        return None
    for name, info in manifest.get("files", {}).items():
        path = out_dir / name
        if not path.exists() or _file_sha256(path) != info["sha256"]:
            return None
    return _prepared(out_dir, manifest, reused=True)


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _publish(tmp: Path, out_dir: Path) -> None:
    """Swap the finished folder in with renames: readers see the old output or the new one, never half."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _progress_bar(progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    # disable=None lets tqdm turn itself off when stderr is not a terminal (CI logs, pods).
    return tqdm(desc=desc, unit=" rows", unit_scale=True, disable=None if progress is None else not progress,
                mininterval=0.5)


def _auto_workers(sources: list[SourceFile]) -> int:
    """Worker processes for big inputs only: starting them costs ~1-2 s, worth it above ~64 MiB."""
    env = os.environ.get("TUNEOPS_DATA_WORKERS")
    if env is not None:
        return int(env)
    try:
        size = sum(sf.fs.size(sf.path) or 0 for sf in sources if sf.kind != "datasets")
    except Exception:  # size unknown (some object stores): stay inline
        return 0
    return min(os.cpu_count() or 1, 4) if size >= WORKERS_MIN_BYTES else 0


def _start_pool(workers: int, spec: DatasetSpec) -> Any:
    """fork when this process has no other thread (fast, and works from scripts without a `__main__`
    guard); else spawn, since forking a threaded process (fsspec's event loop, ...) can deadlock the child.
    If spawn cannot start (an unguarded script), run inline: slower, same output."""
    import multiprocessing
    import threading
    import warnings

    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() \
        else "spawn"
    try:
        return multiprocessing.get_context(method).Pool(workers, initializer=init_worker,
                                                        initargs=(spec.model_dump_json(by_alias=True),))
    except RuntimeError as exc:
        warnings.warn(f"data workers unavailable ({exc.args[0].strip().splitlines()[0]}); processing inline",
                      stacklevel=3)
        return None


def _processed(rows: Any, processor: RowProcessor, pool: Any, workers: int) -> Any:
    """Yield `(line, obj, raw, result)` in input order; result is a processed row or a RowError. With a
    pool, batches go to workers with at most 2 per worker in flight (bounded memory, ordered output)."""
    if pool is None:
        process = processor.process
        for line, obj, error, raw in rows:
            if error is not None:
                yield line, obj, raw, error
                continue
            try:
                yield line, obj, raw, process(obj, raw)
            except RowError as err:
                yield line, obj, raw, err
        return
    from collections import deque

    in_flight: deque = deque()

    def drain_one():
        batch, future = in_flight.popleft()
        results, redactions = future.get()
        if processor.redactor is not None:
            processor.redactor.counts.update(redactions)
        todo = iter(results)
        for line, obj, error, raw in batch:
            yield line, obj, raw, error if error is not None else next(todo)

    def submit(batch: list) -> None:
        work = [(o, r) for _, o, e, r in batch if e is None]
        packed = pack_lines(work)
        future = pool.apply_async(run_packed, (packed,)) if packed else pool.apply_async(run_batch, (work,))
        in_flight.append((batch, future))

    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) >= WORKER_BATCH:
            submit(batch)
            batch = []
            if len(in_flight) >= 2 * workers:
                yield from drain_one()
    if batch:
        submit(batch)
    while in_flight:
        yield from drain_one()


def _chunk_results(sf: SourceFile, stats: SourceStats, processor: RowProcessor, pool: Any, workers: int) -> Any:
    """Yield `(first_line, blob, ChunkResult)` for a JSONL source in input order: the main process only
    reads and hashes blobs; with a pool, workers split and process them, at most 2 per worker in flight."""
    from collections import deque

    blobs = iter_jsonl_blobs(sf, stats)
    try:
        if pool is None:
            for first, blob in blobs:
                yield first, blob, processor.process_chunk(blob, first, sf.uri)
            return
        in_flight: deque = deque()
        for first, blob in blobs:
            in_flight.append((first, blob, pool.apply_async(run_chunk, (blob, first, sf.uri))))
            if len(in_flight) >= 2 * workers:
                first, blob, future = in_flight.popleft()
                yield first, blob, future.get()
        while in_flight:
            first, blob, future = in_flight.popleft()
            yield first, blob, future.get()
    finally:
        blobs.close()


def _write_kept(out: _Output, lines: bytes, starts: Any, ends: Any, mask: Any) -> None:
    """Write the rows selected by `mask` (in order) as a few slices of `lines`, one per run of kept rows."""
    import numpy as np

    n = int(np.count_nonzero(mask))
    if not n:
        return
    edges = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pieces = [lines[a:b] for a, b in zip(starts[run_starts].tolist(), ends[run_ends - 1].tolist())]
    out.write_lines(pieces[0] if len(pieces) == 1 else b"".join(pieces), n)


BULK = True  # tests switch it off to compare against the row-by-row path
_DUPLICATE = RowError("duplicate", "exact duplicate of an earlier row (after normalisation)")


def _run(spec: DatasetSpec, sources: list[SourceFile], tmp: Path, tokenizer: Any, max_seq_length: int | None,
         progress: bool | None, config: dict[str, Any], config_hash: str, workers: int | None) -> dict[str, Any]:
    c, v = spec.cleaning, spec.validation
    processor = RowProcessor(spec)
    convert = processor.convert
    exact = ExactDeduper() if c.dedupe in ("exact", "near") else None
    near = NearDeduper(c.near_duplicate_threshold) if c.dedupe == "near" else None
    counter = TokenCounter(tokenizer, max_seq_length, v.on_too_long, c.min_tokens, c.max_tokens) \
        if tokenizer is not None else None
    splitter = _Splitter(spec.split.validation, spec.split.test, spec.split.seed, spec.split.max_validation_samples)
    max_samples = spec.max_samples
    workers = _auto_workers(sources) if workers is None else workers

    outputs = {name: _Output(tmp / f"{name}.jsonl") for name in SPLITS}
    xxh3, seed = xxhash.xxh3_64_intdigest, spec.split.seed  # the split, inlined from _Splitter.bucket
    val_cut, test_cut = spec.split.validation, spec.split.validation + spec.split.test
    rejects = _Output(tmp / "rejects.jsonl")
    counts, dist = _Counts(), Distributions()
    held_out: list[tuple[float, int]] = []  # capped validation: (-u, key), a max-heap on u
    held_groups: dict[int, list[tuple[int, bytes]]] = {}
    leak_keys: dict[str, set[int]] = {"validation": set(), "test": set()}
    held_hashes = array("Q")  # the bulk path's held-out line hashes: 8 bytes each instead of a set's ~70
    all_stats: list[SourceStats] = []
    order = 0
    stopped = False

    def reject(uri: str, line: int, err: RowError, row: Any, raw: bytes | None = None) -> None:
        counts.by_reason[err.reason] += 1
        rejects.write(reject_record(uri, line, err, row, raw) + b"\n")
        if len(rejects.buffer) >= 256:
            rejects.flush()

    def emit(line: bytes, key: int, chars: int, roles: str, answer: str | None, tokens: int | None) -> None:
        nonlocal order
        counts.kept += 1
        dist.add(roles, chars, tokens, answer)
        u = xxh3(key.to_bytes(8, "little"), seed=seed) * _INV_2_64
        split = "validation" if u < val_cut else ("test" if u < test_cut else "train")
        order += 1
        if split != "train" and v.check_leakage:
            leak_keys[split].add(xxhash.xxh3_64_intdigest(line))
        if split == "validation" and splitter.max_validation is not None:
            # Keep the N distinct samples with the smallest hash: the same N whatever the input order.
            # Rows with the same key are grouped so identical samples never straddle train/validation.
            group = held_groups.get(key)
            if group is not None:
                group.append((order, line))
                return
            if len(held_out) < splitter.max_validation:
                heapq.heappush(held_out, (-u, key))
                held_groups[key] = [(order, line)]
                return
            if -held_out[0][0] > u:
                _, evicted = heapq.heapreplace(held_out, (-u, key))
                held_groups[key] = [(order, line)]
                moved = held_groups.pop(evicted)
            else:
                moved = [(order, line)]
            for _, moved_line in moved:
                leak_keys["validation"].discard(xxhash.xxh3_64_intdigest(moved_line))
                outputs["train"].write(moved_line)
            return
        outputs[split].write(line)

    pending: list[tuple[str, int, Any, bytes | None, tuple]] = []

    def flush_tokens() -> None:
        """Token checks for a batch of rows, then emit or reject each."""
        batch = [loads(p[4][2])["messages"] for p in pending]
        lengths = counter.lengths(batch)
        for (uri, line, obj, raw, done), messages, length in zip(pending, batch, lengths):
            key, chars, out_line, roles, answer, _ = done
            try:
                fixed, length = counter.check(messages, length, None)
                if fixed is not messages:  # truncated: it may now equal a kept row
                    chars = sum(len(m["content"]) for m in fixed)
                    key = row_hash(dedupe_text(fixed))
                    if exact is not None:
                        exact.check(key, "")
                    out_line = dumps({"messages": fixed}) + b"\n"
                    answer = fixed[-1]["content"] if fixed[-1]["content"][:1] == "{" else None
                emit(out_line, key, chars, roles, answer, length)
            except RowError as err:
                if err.reason == "too_long":  # name the dataset's field for the answer turn
                    convert(parse_line(raw, obj) if type(obj) is Unparsed else obj)  # sets field_of's state
                    err.field = convert.field_of(messages, len(messages) - 1, "content")
                reject(uri, line, err, obj, raw)
        pending.clear()

    # Whole blobs at a time when no rule needs rows one by one (token checks, near dedupe, maxSamples,
    # a capped validation split): the main process then does a few numpy calls per ~3,000 rows.
    bulk = BULK and counter is None and near is None and max_samples is None and splitter.max_validation is None

    def consume(uri: str, stats: SourceStats, first_line: int, blob: bytes, res: ChunkResult) -> None:
        import numpy as np

        counts.read += res.rows
        stats.rows += res.rows
        stats.blank_lines += res.blank
        if processor.redactor is not None:
            processor.redactor.counts.update(res.redactions)
        keys = np.frombuffer(res.keys, dtype=np.uint64)
        keep = exact.seen.add_many(keys) if exact is not None else np.ones(len(keys), dtype=bool)
        duplicates = np.flatnonzero(~keep).tolist()
        if res.errors or duplicates:  # rejects in line order, as the row-by-row path writes them
            found = [(line, rec) for line, _, rec in res.errors]
            counts.by_reason.update(reason for _, reason, _ in res.errors)
            if duplicates:
                counts.by_reason["duplicate"] += len(duplicates)
                raws = blob.split(b"\n")
                line_nos = np.frombuffer(res.line_nos, dtype=np.uint64)[duplicates].tolist()
                for line in line_nos:
                    raw = raws[line - first_line]
                    found.append((line, reject_record(uri, line, _DUPLICATE, UNPARSED,
                                                      raw[:-1] if raw[-1:] == b"\r" else raw)))
                found.sort(key=lambda item: item[0])
            for _, rec in found:
                rejects.write(rec + b"\n")
            rejects.flush()
        if not len(keys):
            return
        kept = int(np.count_nonzero(keep))
        counts.kept += kept
        keep_list = None if kept == len(keys) else keep.tolist()
        dist.add_many(res.roles, res.chars, res.answers, keep_list)
        u = np.frombuffer(res.u, dtype=np.float64)
        ends = np.frombuffer(res.ends, dtype=np.uint64).astype(np.int64)
        starts = np.concatenate((np.zeros(1, dtype=np.int64), ends[:-1]))
        validation, held = u < val_cut, u < test_cut
        for name, mask in (("train", ~held & keep), ("validation", validation & keep),
                           ("test", held & ~validation & keep)):
            _write_kept(outputs[name], res.lines, starts, ends, mask)
            if name != "train" and v.check_leakage:
                held_hashes.extend(map(xxhash.xxh3_64_intdigest,
                                       [res.lines[a:b] for a, b in zip(starts[mask].tolist(), ends[mask].tolist())]))
            outputs[name].flush()

    pool = _start_pool(workers, spec) if workers > 1 else None  # before the progress bar's thread exists
    bar = _progress_bar(progress, f"prepare {spec.source}")
    tick = 0
    try:
        for sf in sources:
            stats = SourceStats(sf.uri)
            all_stats.append(stats)
            uri = sf.uri
            if bulk and sf.kind == "jsonl":
                for first_line, blob, res in _chunk_results(sf, stats, processor, pool, workers):
                    consume(uri, stats, first_line, blob, res)
                    bar.update(res.rows)
                continue
            rows = iter_rows(sf, stats)
            checked_columns = False
            results = _processed(rows, processor, pool, workers)
            for line, obj, raw, done in results:
                counts.read += 1
                tick += 1
                if tick == 1024:
                    bar.update(tick)
                    tick = 0
                    for out in outputs.values():
                        out.flush()
                if not checked_columns and stats.columns:
                    checked_columns = True
                    _check_columns(spec, convert, stats, uri)
                if type(done) is RowError:
                    reject(uri, line, done, obj, raw)
                    continue
                try:
                    key = done[0]
                    if exact is not None:
                        exact.check(key, "")
                    if near is not None:
                        near.check(done[5], f"{uri}:{line}")
                except RowError as err:
                    reject(uri, line, err, obj, raw)
                    continue
                if counter is None:
                    emit(done[2], key, done[1], done[3], done[4], None)
                else:
                    pending.append((uri, line, obj, raw, done))
                    if len(pending) >= min(TOKEN_BATCH, (max_samples or 1 << 62) - counts.kept):
                        flush_tokens()
                if max_samples is not None and counts.kept >= max_samples:
                    stopped = True
                    break
            results.close()
            rows.close()
            if stopped:
                break
        if pending:
            flush_tokens()
    finally:
        bar.update(tick)
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()

    for sf, stats in zip(sources, all_stats):
        if not stats.sha256:  # stopped early (maxSamples) or a reader that does not hash as it goes
            stats.sha256 = hash_source(sf)
    for _, line in sorted(row for group in held_groups.values() for row in group):  # input order
        outputs["validation"].write(line)
    for out in [*outputs.values(), rejects]:
        out.close()

    if counts.read == 0:
        raise DataError("no rows: the dataset is empty", source=spec.source, field="spec.dataset.source")
    leakage = _check_leakage(outputs, leak_keys, held_hashes) if v.check_leakage else None
    return _finish(spec, tmp, config, config_hash, sources, all_stats, outputs, rejects, counts, dist,
                   processor.redactor, counter, leakage, stopped)


def _check_columns(spec: DatasetSpec, convert: Converter, stats: SourceStats, uri: str) -> None:
    """Tabular sources know their columns up front: a mapping to a missing column fails at once, with
    the field to fix, instead of rejecting every row."""
    missing = missing_columns(spec.format, convert.fields, stats.columns)
    if missing:
        name, column = missing[0]
        raise DataError(f"column '{column}' is not in {uri} (columns: {', '.join(stats.columns)})",
                        field=f"spec.dataset.fields.{name}")


def _check_leakage(outputs: dict[str, _Output], leak_keys: dict[str, set[int]], held_hashes: array) -> dict[str, Any]:
    """Re-read train once and look its rows up among the held-out rows (bounded memory: only the held-out
    hashes are kept, as one sorted uint64 array). Prompt overlap (same question, different answer) is
    reported, not rejected."""
    import numpy as np

    held = np.unique(np.concatenate([
        np.frombuffer(held_hashes, dtype=np.uint64),
        np.fromiter(chain(leak_keys["validation"], leak_keys["test"]), dtype=np.uint64)]))
    identical = 0
    if len(held):
        with outputs["train"].path.open("rb") as fh:
            while lines := fh.readlines(1 << 20):  # hashed in C, looked up with numpy: no Python per line
                hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, lines), dtype=np.uint64, count=len(lines))
                at = np.minimum(held.searchsorted(hashes), len(held) - 1)
                identical += int(np.count_nonzero(held[at] == hashes))
    if identical:
        raise DataError(f"{identical} train row(s) also appear in validation/test: a pipeline bug, please report")
    return {"identicalSamples": identical, "heldOutRows": len(held)}


def _finish(spec: DatasetSpec, tmp: Path, config: dict[str, Any], config_hash: str, sources: list[SourceFile],
            all_stats: list[SourceStats], outputs: dict[str, _Output], rejects: _Output, counts: _Counts,
            dist: Distributions, redactor: Redactor | None, counter: TokenCounter | None,
            leakage: dict[str, Any] | None, stopped: bool) -> dict[str, Any]:
    from tuneops import __version__

    from .report import write_datacard, write_histogram

    files = {f"{name}.jsonl": out.summary() for name, out in outputs.items()}
    version_sha = hashlib.sha256(f"{PIPELINE_VERSION}\n{config_hash}\n".encode())
    for name in SPLITS:
        version_sha.update(f"{name}.jsonl {files[name + '.jsonl']['sha256']}\n".encode())
    rejected = sum(counts.by_reason.values())
    assert counts.kept + rejected == counts.read, "every row read is kept or rejected"
    invalid_fraction = counts.invalid / counts.read
    manifest: dict[str, Any] = {
        "version": "sha256:" + version_sha.hexdigest(),
        "status": "ok",
        "createdBy": f"tuneops {__version__} ({PIPELINE_VERSION})",
        "configHash": config_hash,
        "config": config,
        "sources": [{"uri": s.uri, "sha256": s.sha256, "bytes": s.bytes, "rows": s.rows,
                     "blankLines": s.blank_lines} for s in all_stats],
        "counts": {"read": counts.read, "kept": counts.kept, "rejected": rejected, "invalid": counts.invalid,
                   "filtered": counts.filtered, **{name: out.rows for name, out in outputs.items()}},
        "rejectedByReason": dict(sorted(counts.by_reason.items())),
        "invalidFraction": round(invalid_fraction, 6),
        "stoppedAtMaxSamples": stopped,
        "files": {**files, "rejects.jsonl": rejects.summary()},
        "redactions": dict(sorted(redactor.counts.items())) if redactor else None,
        "truncated": counter.truncated if counter else 0,
        "leakage": leakage,
        **dist.to_json(),
    }
    limit = spec.validation.max_rejected_fraction
    if invalid_fraction > limit:
        top = ", ".join(f"{r}: {n}" for r, n in counts.by_reason.most_common() if r in INVALID_REASONS)
        manifest["status"] = "failed"
        manifest["failure"] = (f"{counts.invalid} of {counts.read} rows invalid ({invalid_fraction:.1%}) > "
                               f"validation.maxRejectedFraction {limit:g} ({top})")
    elif outputs["train"].rows == 0:
        manifest["status"] = "failed"
        manifest["failure"] = f"no rows left to train on ({counts.kept} kept of {counts.read})"
    if manifest["status"] != "ok":
        for name in SPLITS:  # a failed preparation must not look usable
            (tmp / f"{name}.jsonl").unlink()
        manifest["files"] = {"rejects.jsonl": rejects.summary()}
    png = write_histogram(dist, tmp / "lengths.png")
    manifest["histogramPng"] = png.name if png else None
    (tmp / "manifest.json").write_bytes(_pretty_json(manifest))
    write_datacard(spec, manifest, tmp / "datacard.md", tmp)
    return manifest


def _pretty_json(obj: Any) -> bytes:
    import json

    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
