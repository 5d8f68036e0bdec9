"""Token-length checks with the real SmolLM2-135M-Instruct tokenizer and chat template (slow: uses the
shared materialised model, ~1-2 min once per machine, then ~10 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneops.runtime.data import prepare_dataset
from tests.support.smollm2 import smollm2_dir  # noqa: F401  (session fixture)

from .conftest import chat, kept_rows, make_spec, read_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_example_dataset_with_the_smollm2_tokenizer(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    shutil.copy(REPO / "examples" / "data" / "support-tickets.jsonl", tmp_path / "t.jsonl")
    long_row = chat("Summarise this ticket thread please.", "Customer reports an outage. " * 200)
    with (tmp_path / "t.jsonl").open("a") as fh:
        fh.write(json.dumps(long_row) + "\n")
    spec = make_spec(tmp_path / "t.jsonl", validation={"onTooLong": "truncate"})
    prepared = prepare_dataset(spec, out_dir=tmp_path / "o", tokenizer=tokenizer, max_seq_length=256)
    lengths = prepared.manifest["tokenLengths"]
    assert lengths["count"] == 241 and lengths["max"] <= 256 and lengths["min"] > 20
    assert prepared.manifest["truncated"] == 1
    for row in kept_rows(prepared):  # what training will see fits maxSeqLength
        ids = tokenizer.apply_chat_template(row["messages"], tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert len(ids) <= 256
    rejected = prepare_dataset(make_spec(tmp_path / "t.jsonl", validation={"maxRejectedFraction": 0.01}),
                               out_dir=tmp_path / "r", tokenizer=tokenizer, max_seq_length=256)
    [reject] = read_jsonl(rejected.rejects_path)
    assert (reject["line"], reject["reason"], reject["field"]) == (241, "too_long", "messages[1].content")
