"""Readers: every supported file kind, compression, globs, folders and URIs, including adversarial bytes."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from tuneops.runtime.data import DataError, prepare_dataset
from tuneops.runtime.data.readers import SourceStats, iter_rows, resolve_sources
from tuneops.runtime.data.rowproc import Unparsed

from .conftest import assert_accounted, chat, kept_rows, make_spec, read_jsonl, write_jsonl

ROWS = [chat(f"question {i}", f"answer {i}") for i in range(6)]


def rows_of(path: Path | str, base_dir: Path | None = None) -> list[tuple]:
    """(uri, line, row, error reason) as read; JSONL rows (read unparsed) are parsed here."""
    out = []
    for sf in resolve_sources(str(path), base_dir):
        stats = SourceStats(sf.uri)
        for line, obj, err, raw in iter_rows(sf, stats):
            out.append((sf.uri, line, json.loads(raw) if isinstance(obj, Unparsed) else obj, err.reason if err else None))
    return out


def users(prepared) -> list[str]:
    return sorted(r["messages"][-2]["content"] for r in kept_rows(prepared))


def test_jsonl_bom_crlf_blank_lines_and_line_numbers(tmp_path):
    body = "\r\n".join(json.dumps(r) for r in ROWS[:2]) + "\r\n\r\n   \r\n" + json.dumps(ROWS[2]) + "\r\n"
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    got = rows_of(path)
    assert [(line, err) for _, line, _, err in got] == [(1, None), (2, None), (5, None)]
    assert got[0][2] == ROWS[0]
    prepared = prepare_dataset(make_spec(path), out_dir=tmp_path / "out")
    assert prepared.manifest["counts"]["read"] == 3
    assert prepared.manifest["sources"][0]["blankLines"] == 2


def test_jsonl_truncated_last_line_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1])[:25], encoding="utf-8")
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.5}), out_dir=tmp_path / "o")
    [reject] = read_jsonl(prepared.rejects_path)
    assert reject["line"] == 2 and reject["reason"] == "invalid_json" and reject["source"] == str(path)
    assert "truncated" in reject["message"]
    assert reject["row"] == json.dumps(ROWS[1])[:25]  # the raw text is kept: nothing is lost
    assert_accounted(prepared)


def test_jsonl_invalid_utf8_row_is_rejected_others_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    bad = b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}'
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + bad + b"\n" + json.dumps(ROWS[1]).encode() + b"\n")
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 0.5}), out_dir=tmp_path / "o")
    [reject] = read_jsonl(prepared.rejects_path)
    assert (reject["line"], reject["reason"]) == (2, "invalid_utf8")
    assert "\\xe9" in reject["row"]
    assert users(prepared) == ["question 0", "question 1"]


def test_jsonl_ten_megabyte_single_row(tmp_path):
    big = "word " * (2 * 1024 * 1024)  # 10 MiB of text in one row
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], chat("summarise", big.strip()), ROWS[1]])
    assert path.stat().st_size > 10_000_000
    prepared = prepare_dataset(make_spec(path), out_dir=tmp_path / "o")
    assert prepared.manifest["counts"]["kept"] == 3
    assert prepared.manifest["charLengths"]["max"] > 10_000_000
    limited = prepare_dataset(make_spec(path, cleaning={"maxChars": 1000}), out_dir=tmp_path / "o2")
    [reject] = read_jsonl(limited.rejects_path)
    assert (reject["line"], reject["reason"]) == (2, "too_long_chars")
    assert_accounted(limited)


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.*") as info:
        prepare_dataset(make_spec(path), out_dir=tmp_path / "o")
    assert info.value.field == "spec.dataset.source"
    assert not (tmp_path / "o").exists()


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        prepare_dataset(make_spec(tmp_path / "nope.jsonl"), out_dir=tmp_path / "o")
    assert "nope.jsonl" in str(info.value) and info.value.field == "spec.dataset.source"
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the file type"):
        prepare_dataset(make_spec(tmp_path / "data.txt"), out_dir=tmp_path / "o")


def test_relative_source_resolves_against_base_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "d.jsonl", ROWS)
    prepared = prepare_dataset(make_spec("sub/d.jsonl"), out_dir=tmp_path / "o", base_dir=tmp_path)
    assert prepared.manifest["counts"]["kept"] == len(ROWS)


def test_json_array_with_line_numbers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[:3], indent=2), encoding="utf-8")
    got = rows_of(path)
    assert [obj for _, _, obj, _ in got] == ROWS[:3]
    text = path.read_text().splitlines()
    for _, line, _, _ in got:  # each element starts on the line it reports
        assert text[line - 1].strip() == "{"


def test_json_wrapper_single_object_and_jsonl_saved_as_json(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"data": ROWS[:2]}))
    (tmp_path / "one.json").write_text(json.dumps(ROWS[0]))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in ROWS[:3]))
    assert [o for _, _, o, _ in rows_of(tmp_path / "w.json")] == ROWS[:2]
    assert [o for _, _, o, _ in rows_of(tmp_path / "one.json")] == ROWS[:1]
    assert [(line, o) for _, line, o, _ in rows_of(tmp_path / "lines.json")] == list(zip([1, 2, 3], ROWS[:3]))


def test_json_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"messages": []},\n  {"messages": [}\n]')
    with pytest.raises(DataError) as info:
        prepare_dataset(make_spec(path), out_dir=tmp_path / "o")
    assert info.value.line == 3 and str(path) in str(info.value) and "invalid JSON" in str(info.value)


def test_csv_bom_crlf_multiline_cells_and_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["question", "answer"])
        w.writerow(["first\nquestion", "a1"])  # a cell spanning two lines
        w.writerow(["second", "a2"])
        w.writerow(["only one field"])
    with path.open("ab") as fh:
        fh.write(b"caf\xe9,a4\r\nlast,a5\r\n")
    spec = make_spec(path, "alpaca", fields={"instruction": "question", "output": "answer"},
                     validation={"maxRejectedFraction": 0.5})
    prepared = prepare_dataset(spec, out_dir=tmp_path / "o")
    rejects = {r["line"]: r for r in read_jsonl(prepared.rejects_path)}
    assert rejects[5]["reason"] == "invalid_csv" and "header has 2" in rejects[5]["message"]
    assert rejects[6]["reason"] == "invalid_utf8" and rejects[6]["field"] == "question"
    assert users(prepared) == ["first\nquestion", "last", "second"]
    assert_accounted(prepared)


def test_csv_mapping_to_missing_column_fails_naming_the_field(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,a\nx,y\n")
    spec = make_spec(path, "alpaca", fields={"instruction": "question", "output": "a"})
    with pytest.raises(DataError, match="column 'question' is not in") as info:
        prepare_dataset(spec, out_dir=tmp_path / "o")
    assert info.value.field == "spec.dataset.fields.instruction"


def test_tsv(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("prompt\tcompletion\nhi, there\tyes, hello\n")
    prepared = prepare_dataset(make_spec(path, "prompt-completion"), out_dir=tmp_path / "o")
    assert kept_rows(prepared)[0]["messages"] == [{"role": "user", "content": "hi, there"},
                                                  {"role": "assistant", "content": "yes, hello"}]


def test_parquet_streams_in_batches_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=1000)
    got = rows_of(tmp_path / "d.parquet")
    assert len(got) == 5000 and got[4999][1] == 5000 and got[4999][2]["output"] == "a4999"
    prepared = prepare_dataset(make_spec(tmp_path / "d.parquet", "alpaca"), out_dir=tmp_path / "o")
    assert prepared.manifest["counts"]["kept"] == 5000
    assert prepared.manifest["sources"][0]["sha256"].startswith("sha256:")


def test_datasets_folder_and_datasetdict(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)])
    ds.save_to_disk(str(tmp_path / "ds"))
    DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(tmp_path / "dd"))
    for folder in ("ds", "dd"):
        prepared = prepare_dataset(make_spec(tmp_path / folder, "prompt-completion"), out_dir=tmp_path / f"o-{folder}")
        assert prepared.manifest["counts"]["kept"] == 10, folder


def test_gzip_glob_folder_and_file_uri(tmp_path):
    out, tmp_path = tmp_path, tmp_path / "in"
    tmp_path.mkdir()
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    write_jsonl(tmp_path / "b.jsonl", ROWS[3:])
    (tmp_path / "notes.md").write_text("ignored")
    globbed = prepare_dataset(make_spec(tmp_path / "*.jsonl*"), out_dir=out / "o1")
    folder = prepare_dataset(make_spec(tmp_path), out_dir=out / "o2")
    uri = prepare_dataset(make_spec(f"file://{tmp_path}/b.jsonl"), out_dir=out / "o3")
    assert users(globbed) == users(folder) == sorted(f"question {i}" for i in range(6))
    assert [s["uri"].endswith(n) for s, n in zip(folder.manifest["sources"], ("a.jsonl.gz", "b.jsonl"))] == [True] * 2
    assert users(uri) == ["question 3", "question 4", "question 5"]
    # The hash is of the stored (compressed) bytes, as `sha256sum` would print.
    import hashlib
    assert folder.manifest["sources"][0]["sha256"] == "sha256:" + hashlib.sha256(
        (tmp_path / "a.jsonl.gz").read_bytes()).hexdigest()
