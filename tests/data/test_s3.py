"""s3:// sources through fsspec/s3fs against a real S3-compatible HTTP server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.support.s3 import local_s3
from tuneops.runtime.data import DataError, prepare_dataset

from .conftest import chat, kept_rows, make_spec, read_jsonl

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

ROWS = [chat(f"question {i}", f"answer {i}") for i in range(30)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free local port; the AWS_* variables point botocore/s3fs at it."""
    mp = pytest.MonkeyPatch()
    with local_s3(mp, "datasets") as (client, _):
        yield client
    mp.undo()


def put_jsonl(client, key: str, rows: list, compress: bool = False) -> None:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    client.put_object(Bucket="datasets", Key=key, Body=gzip.compress(body) if compress else body)


def test_s3_jsonl_prefix_and_rejects(s3, tmp_path):
    put_jsonl(s3, "support/part-0.jsonl", ROWS[:15] + [{"messages": "broken"}])
    put_jsonl(s3, "support/part-1.jsonl.gz", ROWS[15:], compress=True)
    single = prepare_dataset(make_spec("s3://datasets/support/part-0.jsonl", validation={"maxRejectedFraction": 0.1}),
                             out_dir=tmp_path / "one")
    assert single.manifest["counts"]["kept"] == 15
    [reject] = read_jsonl(single.rejects_path)
    assert (reject["source"], reject["line"], reject["reason"]) == ("s3://datasets/support/part-0.jsonl", 16, "wrong_type")
    folder = prepare_dataset(make_spec("s3://datasets/support", validation={"maxRejectedFraction": 0.1}),
                             out_dir=tmp_path / "all")
    assert sorted(r["messages"][0]["content"] for r in kept_rows(folder)) == sorted(
        r["messages"][0]["content"] for r in ROWS)
    assert [s["uri"] for s in folder.manifest["sources"]] == [
        "s3://datasets/support/part-0.jsonl", "s3://datasets/support/part-1.jsonl.gz"]
    # Same bytes on S3 and on disk: same version.
    local = tmp_path / "local.jsonl"
    local.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:15] + [{"messages": "broken"}]))
    assert prepare_dataset(make_spec(local, validation={"maxRejectedFraction": 0.1}),
                           out_dir=tmp_path / "l").version == single.version


def test_s3_parquet(s3, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(50)]), buf)
    s3.put_object(Bucket="datasets", Key="pc/data.parquet", Body=buf.getvalue())
    prepared = prepare_dataset(make_spec("s3://datasets/pc/data.parquet", "prompt-completion"), out_dir=tmp_path / "o")
    assert prepared.manifest["counts"]["kept"] == 50


def test_s3_missing_object_names_the_uri(s3, tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        prepare_dataset(make_spec("s3://datasets/nope.jsonl"), out_dir=tmp_path / "o")
    assert "s3://datasets/nope.jsonl" in str(info.value) and info.value.field == "spec.dataset.source"
