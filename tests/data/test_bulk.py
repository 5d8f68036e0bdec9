"""The bulk JSONL path (whole blobs per worker call, numpy dedupe and split in the main process) must give
exactly what the row-by-row path gives: same kept rows in the same files, same rejects with the same
reasons and records, same manifest and version, whatever the chunking and with or without workers."""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import re
import unicodedata
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneops.api.dataset import CleaningSpec
from tuneops.runtime.data import RowError, pipeline, prepare_dataset, readers
from tuneops.runtime.data.cleaning import (build_cleaner, collapse_whitespace, dedupe_text, normalize_unicode,
                                           strip_control_chars)
from tuneops.runtime.data.dedupe import CompactHashSet
from tuneops.runtime.data.rowproc import RowProcessor

from .conftest import assert_accounted, chat, make_spec, read_jsonl

REPO = Path(__file__).resolve().parents[2]
FILES = ("train.jsonl", "validation.jsonl", "test.jsonl", "rejects.jsonl")


def bench_rows(n: int) -> list[dict]:
    """The benchmark's synthetic rows: non-NFC text, control chars, whitespace runs, duplicates, invalid rows."""
    spec = importlib.util.spec_from_file_location("data_bench", REPO / "bench" / "data_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return list(bench.make_rows(n, seed=3))


def adversarial_bytes() -> bytes:
    """BOM, CRLF, blank and whitespace-only lines, invalid UTF-8, nested garbage, a >1 MiB row (longer than
    a read chunk), JSON answers (labels), PII, duplicates after normalisation, and a truncated last line."""
    rng = random.Random(7)
    lines = []
    for i in range(400):
        answer = json.dumps({"category": rng.choice("abc"), "severity": rng.randint(1, 3)}) if i % 3 else f"ok {i}"
        user = f"Question {i % 150}: reach me at user{i % 7}@example.com or +44 20 7946 0{i % 1000:03d}"
        if i % 11 == 0:
            user = "  " + user.upper().replace(" ", "   ") + "\x07 \r\n\r\nthanks  "
        if i % 13 == 0:
            user += " cafe\u0301 déjà"
        lines.append(json.dumps(chat(user, answer, system="Be brief." if i % 2 else None),
                                ensure_ascii=bool(i % 5)).encode())
    lines[10] = b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}'
    lines[20] = b"[" * 5000 + b"]" * 5000
    lines[30] = b'{"messages": "broken"}'
    lines[40] = b""
    lines[41] = b"   \t"
    lines[50] = json.dumps(chat("summarise this", "word " * 300_000)).encode()  # ~1.5 MiB
    lines[60] = b'{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}'
    lines[300] = b'{"messages": "broken among duplicates"}'  # rejects interleave: errors and duplicates
    body = b"\r\n".join(lines[:200]) + b"\r\n" + b"\n".join(lines[200:]) + b"\n"
    return b"\xef\xbb\xbf" + body + json.dumps(chat("cut", "off"))[:20].encode()


def prepared_files(src: Path, out: Path, spec_fields: dict, *, bulk: bool, workers: int, monkeypatch,
                   chunk: int | None = None):
    """Prepare `src` with the bulk path on or off; the output files' bytes, the manifest and the result."""
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "BULK", bulk)
        if chunk is not None:
            patch.setattr(readers, "CHUNK", chunk)
        prepared = prepare_dataset(make_spec(src, **spec_fields), out_dir=out, workers=workers, reuse=False)
    assert_accounted(prepared)
    return {f: (prepared.out_dir / f).read_bytes() for f in FILES}, prepared.manifest, prepared


SPEC = {"cleaning": {"redactPII": True}, "validation": {"maxRejectedFraction": 0.5},
        "split": {"validation": 0.1, "test": 0.05, "seed": 5}}


def test_bulk_path_matches_row_by_row_on_adversarial_rows(tmp_path, monkeypatch):
    src = tmp_path / "d.jsonl"
    src.write_bytes(adversarial_bytes())
    slow, slow_manifest, prepared = prepared_files(src, tmp_path / "slow", SPEC, bulk=False, workers=0,
                                                   monkeypatch=monkeypatch)
    reasons = prepared.manifest["rejectedByReason"]
    assert {"invalid_utf8", "invalid_json", "wrong_type", "role_order", "duplicate"} <= set(reasons)
    assert prepared.manifest["sources"][0]["blankLines"] == 2
    assert prepared.manifest["redactions"]["email"] > 0 and prepared.manifest["labels"]
    assert prepared.manifest["counts"]["validation"] > 0 and prepared.manifest["counts"]["test"] > 0
    truncated = read_jsonl(prepared.rejects_path)[-1]
    assert truncated["line"] == 401 and "truncated" in truncated["message"]
    for name, chunk in {"bulk": None, "bulk-small-chunks": 4096, "bulk-tiny-chunks": 7}.items():
        fast, fast_manifest, _ = prepared_files(src, tmp_path / name, SPEC, bulk=True, workers=0,
                                                monkeypatch=monkeypatch, chunk=chunk)
        assert fast == slow, name
        assert fast_manifest == slow_manifest, name


@pytest.mark.parametrize("spec_fields", [SPEC, {"cleaning": {"dedupe": "none"}, "split": {"validation": 0.2}},
                                         {"cleaning": {"stripHtml": True, "stripMarkdown": True},
                                          "validation": {"checkLeakage": False}}])
def test_bulk_path_with_workers_matches_row_by_row_on_the_bench_rows(tmp_path, monkeypatch, spec_fields):
    src = tmp_path / "d.jsonl"
    src.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bench_rows(6000)).encode())
    slow, slow_manifest, _ = prepared_files(src, tmp_path / "slow", spec_fields, bulk=False, workers=0,
                                            monkeypatch=monkeypatch)
    fast, fast_manifest, prepared = prepared_files(src, tmp_path / "fast", spec_fields, bulk=True, workers=2,
                                                   monkeypatch=monkeypatch, chunk=64 << 10)
    assert prepared.manifest["counts"]["read"] == 6000 and prepared.manifest["counts"]["rejected"] > 0
    assert fast == slow
    assert fast_manifest == slow_manifest


def test_compact_hash_set_add_many_is_add_in_order(monkeypatch):
    monkeypatch.setattr(CompactHashSet, "RUN_MAX", 64)
    monkeypatch.setattr(CompactHashSet, "RECENT_MAX", 16)
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 2**64, size=400, dtype=np.uint64)
    one, many = CompactHashSet(), CompactHashSet()
    for step in range(60):
        batch = rng.choice(pool, size=int(rng.integers(0, 40)))  # repeats within and across batches
        expected = [one.add(int(k)) for k in batch]
        if step % 5 == 4:  # the row-by-row API on the same set in between
            got = [many.add(int(k)) for k in batch]
        else:
            got = many.add_many(batch).tolist()
        assert got == expected
        assert len(many) == len(one)
    assert all(int(k) in many for k in pool if int(k) in one)
    assert not any(int(k) in many for k in rng.integers(0, 2**64, size=50, dtype=np.uint64))
    assert max(len(r) for r in many._runs) <= 64 and len(many._runs) > 2


# --- the fused fast paths give what the general rules give ----------------------------------------------
TRICKY = st.lists(st.sampled_from(list("aZ é{}:\"") + ["  ", "\t", "\n", "\r\n", "\x07", "\x00", "e\u0301", "\u00a0",
                                                        "\u3000", "\ufeff", "\u2028", "\u200b", "\x85", "\x1c",
                                                        "日本", "🎉", "A\u030a", "ﬁ", "\ud800"]),
                  max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_default_cleaner_matches_the_composed_rules(text):
    assert build_cleaner(CleaningSpec())(text) == collapse_whitespace(strip_control_chars(normalize_unicode(text)))


TURN = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "developer", "User", "bot"]),
                              "content": TRICKY | st.sampled_from(["ok", "Hello World", "{\"a\": 1}"])})
ROW = st.fixed_dictionaries({"messages": st.lists(TURN | st.just("x"), max_size=5)}) | st.just([])


def outcome(processor: RowProcessor, row) -> tuple:
    try:
        return ("ok", processor.process(row, None))
    except RowError as err:
        return ("rejected", err.reason, err.field, err.message)


@settings(max_examples=400, deadline=None)
@given(ROW, st.sampled_from([{}, {"minChars": 5, "maxChars": 20}, {"normalizeUnicode": False}]),
       st.booleans())
def test_fused_openai_path_matches_the_general_path(row, cleaning, require_assistant):
    spec = make_spec("x.jsonl", cleaning=cleaning, validation={"requireAssistantTurn": require_assistant})
    fused, general = RowProcessor(spec), RowProcessor(spec)
    assert fused.fast_keys is not None
    general.fast_keys = None
    assert outcome(fused, copy.deepcopy(row)) == outcome(general, copy.deepcopy(row))


def test_leakage_check_finds_a_held_out_row_in_train(tmp_path):
    import xxhash

    train = pipeline._Output(tmp_path / "train.jsonl")
    for i in range(5000):
        train.write(b'{"messages": %d}\n' % i)
    train.close()
    outputs = {"train": train}
    held = array("Q", [xxhash.xxh3_64_intdigest(b'{"messages": -1}\n')])
    sets = {"validation": {xxhash.xxh3_64_intdigest(b'{"messages": -2}\n')}, "test": set()}
    assert pipeline._check_leakage(outputs, sets, held) == {"identicalSamples": 0, "heldOutRows": 2}
    held.append(xxhash.xxh3_64_intdigest(b'{"messages": 4321}\n'))
    sets["test"].add(xxhash.xxh3_64_intdigest(b'{"messages": 7}\n'))
    with pytest.raises(pipeline.DataError, match="2 train row"):
        pipeline._check_leakage(outputs, sets, held)


# The regex versions these rules had (the specification the faster str-method versions must match).
_WS_RUN = re.compile(r"(?<=\S)[^\S\n]{2,}|[^\S\n ]")
_TRAILING = re.compile(r"[^\S\n]+(?=\n)")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b\u2060\ud800-\udfff]")


def collapse_reference(text: str) -> str:
    if not text or not ("  " in text or "\t" in text or " \n" in text or "\n\n\n" in text
                        or text[0].isspace() or text[-1].isspace() or "\x0b" in text or "\x0c" in text
                        or "\r" in text or (not text.isascii() and re.search(r"[^\S\n\r\t\x0b\x0c ]", text))):
        return text  # the same guard (so ASCII \x1c-\x1f stay unless another hit triggers the rules)
    text = _WS_RUN.sub(" ", text)
    text = _TRAILING.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


WHITESPACE = st.lists(st.sampled_from(["a", "b c", " ", "  ", "\t", "\n", "\n\n\n", "\r", "\r\n", "\x0b", "\x0c",
                                       "\x1c", "\x85", "\u00a0", "\u2028", "\u3000", "é", "\x07"]),
                      max_size=15).map("".join)


@settings(max_examples=500, deadline=None)
@given(WHITESPACE)
def test_collapse_whitespace_matches_the_regex_rules(text):
    assert collapse_whitespace(text) == collapse_reference(text)


@settings(max_examples=300, deadline=None)
@given(WHITESPACE)
def test_strip_control_chars_matches_the_regex_rules(text):
    assert strip_control_chars(text) == _CONTROL.sub("", _NEWLINES.sub("\n", text))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), WHITESPACE | TRICKY), max_size=4))
def test_normal_form_skips_split_join_only_when_it_changes_nothing(turns):
    messages = [{"role": role, "content": content} for role, content in turns]
    text = "\x00".join([m["role"][0] + ":" + m["content"] for m in messages])
    assert dedupe_text(messages) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())
