"""The pipeline as a whole: accounting, thresholds, deterministic split, versioning and reuse, token checks,
manifest, data card and the atomic output folder."""

from __future__ import annotations

import json
import random

import pytest

from tuneops.runtime.data import DataError, prepare_dataset

from .conftest import WORDS, assert_accounted, chat, kept_rows, make_spec, read_jsonl, write_jsonl

ROWS = [chat(f"question number {i} about {random.Random(i).choice(WORDS)}", f"answer {i}") for i in range(400)]


def split_of(prepared) -> dict[str, str]:
    return {r["messages"][0]["content"]: split for split in ("train", "validation", "test")
            for r in prepared.rows(split)}


def test_split_fractions_determinism_and_version(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    spec = make_spec(path, split={"validation": 0.2, "test": 0.1, "seed": 7})
    a = prepare_dataset(spec, out_dir=tmp_path / "a")
    b = prepare_dataset(spec, out_dir=tmp_path / "b")
    counts = a.manifest["counts"]
    assert counts["train"] + counts["validation"] + counts["test"] == 400
    assert 50 <= counts["validation"] <= 110 and 20 <= counts["test"] <= 65
    assert a.version == b.version and a.version.startswith("sha256:") and len(a.version) == 71
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes()
    other_seed = prepare_dataset(make_spec(path, split={"validation": 0.2, "test": 0.1, "seed": 8}),
                                 out_dir=tmp_path / "c")
    assert other_seed.version != a.version and split_of(other_seed) != split_of(a)


def test_split_is_stable_under_reordering_and_appending(tmp_path):
    spec_args = {"split": {"validation": 0.25, "seed": 1}}
    first = prepare_dataset(make_spec(write_jsonl(tmp_path / "a.jsonl", ROWS[:300]), **spec_args), out_dir=tmp_path / "a")
    shuffled = ROWS[:]
    random.Random(3).shuffle(shuffled)
    second = prepare_dataset(make_spec(write_jsonl(tmp_path / "b.jsonl", shuffled), **spec_args), out_dir=tmp_path / "b")
    before, after = split_of(first), split_of(second)
    assert all(after[text] == split for text, split in before.items())  # no row changed sides


def test_max_validation_samples_is_order_independent(tmp_path):
    spec_args = {"split": {"validation": 0.5, "maxValidationSamples": 10, "seed": 3}}
    shuffled = ROWS[:]
    random.Random(5).shuffle(shuffled)
    a = prepare_dataset(make_spec(write_jsonl(tmp_path / "a.jsonl", ROWS), **spec_args), out_dir=tmp_path / "a")
    b = prepare_dataset(make_spec(write_jsonl(tmp_path / "b.jsonl", shuffled), **spec_args), out_dir=tmp_path / "b")
    assert a.manifest["counts"]["validation"] == 10
    assert a.manifest["counts"]["train"] == 390
    assert sorted(map(json.dumps, a.rows("validation"))) == sorted(map(json.dumps, b.rows("validation")))
    assert_accounted(a)


def test_identical_samples_never_straddle_splits(tmp_path):
    # With dedupe off, repeated rows must still land in one split (leakage check by construction).
    rows = [r for r in ROWS[:100] for _ in range(3)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    prepared = prepare_dataset(make_spec(path, cleaning={"dedupe": "none"},
                                         split={"validation": 0.3, "maxValidationSamples": 5}), out_dir=tmp_path / "o")
    assert prepared.manifest["leakage"]["identicalSamples"] == 0
    train = {json.dumps(r) for r in prepared.rows("train")}
    assert not train & {json.dumps(r) for r in prepared.rows("validation")}
    assert prepared.manifest["counts"]["validation"] == 15  # 5 distinct samples x 3 copies


def test_reuse_when_unchanged_and_rerun_when_input_or_config_changes(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS[:50])
    spec = make_spec(path)
    first = prepare_dataset(spec, out_dir=tmp_path / "o")
    again = prepare_dataset(spec, out_dir=tmp_path / "o")
    assert again.reused and again.version == first.version and not first.reused
    write_jsonl(path, ROWS[:51])
    changed = prepare_dataset(spec, out_dir=tmp_path / "o")
    assert not changed.reused and changed.version != first.version
    reconfigured = prepare_dataset(make_spec(path, cleaning={"dedupe": "none"}), out_dir=tmp_path / "o")
    assert not reconfigured.reused
    (tmp_path / "o" / "train.jsonl").write_text("tampered\n")
    assert not prepare_dataset(make_spec(path, cleaning={"dedupe": "none"}), out_dir=tmp_path / "o").reused
    # The location is not part of the version: the same bytes elsewhere are the same dataset.
    moved = write_jsonl(tmp_path / "moved.jsonl", ROWS[:51])
    assert prepare_dataset(make_spec(moved), out_dir=tmp_path / "m").version == changed.version


def test_too_many_invalid_rows_fails_naming_the_threshold(tmp_path):
    rows = [*ROWS[:18], {"messages": "broken"}, {"nope": 1}]  # 10% invalid
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as info:
        prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.05}), out_dir=tmp_path / "o")
    assert info.value.field == "spec.dataset.validation.maxRejectedFraction"
    assert "2 of 20 rows invalid (10.0%)" in str(info.value) and str(path) in str(info.value)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not (tmp_path / "o" / "train.jsonl").exists()
    assert len(read_jsonl(tmp_path / "o" / "rejects.jsonl")) == 2
    ok = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.1}), out_dir=tmp_path / "o")
    assert ok.manifest["status"] == "ok" and ok.manifest["invalidFraction"] == 0.1


def test_duplicates_do_not_count_towards_the_invalid_threshold(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS[:10] * 3)
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.0}), out_dir=tmp_path / "o")
    assert prepared.manifest["rejectedByReason"] == {"duplicate": 20}
    assert prepared.manifest["invalidFraction"] == 0.0


def test_max_samples_stops_reading(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0]] * 3 + ROWS[1:200])
    prepared = prepare_dataset(make_spec(path, maxSamples=20), out_dir=tmp_path / "o")
    counts = prepared.manifest["counts"]
    assert counts["kept"] == 20 and counts["read"] == 22 and prepared.manifest["stoppedAtMaxSamples"]
    assert prepared.manifest["sources"][0]["sha256"].startswith("sha256:")
    assert_accounted(prepared)


def test_token_checks_reject_or_truncate(tmp_path, word_tokenizer):
    long_answer = " ".join(["hello world"] * 30)
    rows = [chat("reset my password", "sure"), chat("reset my password please", long_answer),
            chat(" ".join(["one two three"] * 20), "ok")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    reject = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 1.0}), out_dir=tmp_path / "r",
                             tokenizer=word_tokenizer, max_seq_length=40)
    assert [(r["line"], r["reason"], r["field"]) for r in read_jsonl(reject.rejects_path)] == [
        (2, "too_long", "messages[1].content"), (3, "too_long", "messages[1].content")]
    lengths = reject.manifest["tokenLengths"]
    assert lengths["count"] == 1 and lengths["max"] <= 40
    truncate = prepare_dataset(make_spec(path, validation={"onTooLong": "truncate", "maxRejectedFraction": 1.0}),
                               out_dir=tmp_path / "t", tokenizer=word_tokenizer, max_seq_length=40)
    [(line, reason)] = [(r["line"], r["reason"]) for r in read_jsonl(truncate.rejects_path)]
    assert (line, reason) == (3, "too_long")  # the prompt alone is too long: cannot be truncated
    kept = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in kept_rows(truncate)}
    cut = kept["reset my password please"]
    assert long_answer.startswith(cut) and 0 < len(cut) < len(long_answer)
    rendered = word_tokenizer.apply_chat_template(
        [{"role": "user", "content": "reset my password please"}, {"role": "assistant", "content": cut}], tokenize=True)
    assert len(rendered["input_ids"] if isinstance(rendered, dict) else rendered) <= 40
    assert truncate.manifest["truncated"] == 1
    assert truncate.manifest["config"]["tokenizer"].startswith("sha256:")


def test_token_filters(tmp_path, word_tokenizer):
    rows = [chat("a", "b"), chat("reset my password please", "sure"), chat(" ".join(WORDS), "ok")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    prepared = prepare_dataset(make_spec(path, cleaning={"minTokens": 15, "maxTokens": 30}), out_dir=tmp_path / "o",
                               tokenizer=word_tokenizer)
    assert [(r["line"], r["reason"]) for r in read_jsonl(prepared.rejects_path)] == [
        (1, "too_few_tokens"), (3, "too_many_tokens")]
    with pytest.raises(DataError, match="need the model's tokenizer") as info:
        prepare_dataset(make_spec(path, cleaning={"maxTokens": 30}), out_dir=tmp_path / "x")
    assert info.value.field == "spec.dataset.cleaning.maxTokens"


def test_manifest_datacard_and_histogram(tmp_path, word_tokenizer):
    rows = [{"messages": [{"role": "user", "content": f"ticket {i}"}, {"role": "assistant", "content": json.dumps(
        {"category": ["billing", "login"][i % 2], "severity": "low"})}]} for i in range(30)] + [{"bad": 1}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.1}), out_dir=tmp_path / "o",
                               tokenizer=word_tokenizer, max_seq_length=512)
    m = prepared.manifest
    assert m["counts"] == {"read": 31, "kept": 30, "rejected": 1, "invalid": 1, "filtered": 0,
                           "train": 30, "validation": 0, "test": 0}
    assert m["rejectedByReason"] == {"missing_field": 1}
    assert m["labels"] == {"category": {"billing": 15, "login": 15}, "severity": {"low": 30}}
    assert m["roles"] == {"assistant": 30, "user": 30} and m["turnsPerSample"] == {"2": 30}
    hist = m["tokenLengths"]["histogram"]
    assert sum(hist["counts"]) == 30 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert m["sources"][0]["rows"] == 31 and m["sources"][0]["sha256"].startswith("sha256:")
    for name, info in m["files"].items():
        import hashlib
        assert info["sha256"] == "sha256:" + hashlib.sha256((prepared.out_dir / name).read_bytes()).hexdigest()
    on_disk = json.loads((prepared.out_dir / "manifest.json").read_text())
    assert on_disk["version"] == prepared.version
    card = prepared.datacard_path.read_text()
    assert prepared.version in card and "missing_field" in card and "![length histogram](lengths.png)" in card
    assert "| billing | 15 |" in card
    png = prepared.out_dir / m["histogramPng"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_folder_is_replaced_atomically(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS[:20])
    out = tmp_path / "o"
    prepare_dataset(make_spec(path), out_dir=out)
    (out / "stale-extra-file").write_text("from an older run")
    write_jsonl(path, ROWS[:30])
    prepared = prepare_dataset(make_spec(path), out_dir=out)
    assert not (out / "stale-extra-file").exists() and prepared.manifest["counts"]["kept"] == 30
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".o")]
    assert leftovers == []  # no temp or old folders left behind
    with pytest.raises(DataError):
        prepare_dataset(make_spec(tmp_path / "missing.jsonl"), out_dir=out)
    assert read_jsonl(out / "train.jsonl")  # a failed run before writing leaves the previous output alone


def test_worker_processes_give_byte_identical_output(tmp_path, word_tokenizer):
    rows = [*ROWS[:300], *ROWS[:20], {"messages": "broken"}, chat("mail me at x@y.io", "ok"),
            chat("reset my password please", " ".join(["hello world"] * 30))]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    spec = make_spec(path, cleaning={"redactPII": True}, split={"validation": 0.2, "maxValidationSamples": 30},
                     validation={"onTooLong": "truncate"})
    inline = prepare_dataset(spec, out_dir=tmp_path / "inline", workers=0, tokenizer=word_tokenizer, max_seq_length=40)
    pooled = prepare_dataset(spec, out_dir=tmp_path / "pooled", workers=2, tokenizer=word_tokenizer, max_seq_length=40)
    assert pooled.version == inline.version
    for name in ("train.jsonl", "validation.jsonl", "rejects.jsonl"):
        assert (pooled.out_dir / name).read_bytes() == (inline.out_dir / name).read_bytes(), name
    assert pooled.manifest["redactions"] == inline.manifest["redactions"] == {"email": 1}
    assert pooled.manifest["rejectedByReason"] == {"duplicate": 20, "wrong_type": 1}
    assert pooled.manifest["truncated"] == 1
