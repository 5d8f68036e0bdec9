"""Helpers for the data pipeline tests: write inputs, build specs, read outputs, a tiny real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneops.api.dataset import DatasetSpec

WORDS = ("hello world reset my password please the invoice is wrong refund ok done sure answer question "
         "login billing api a b c d e f g h i j k l m n o p q r s t u v w x y z one two three four five").split()


def make_spec(source: str | Path, fmt: str = "openai-messages", **fields: Any) -> DatasetSpec:
    """A DatasetSpec from camelCase keyword overrides, e.g. cleaning={"dedupe": "near"}."""
    return DatasetSpec.model_validate({"source": str(source), "format": fmt,
                                       "split": {"validation": 0.0}, **fields})


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def kept_rows(prepared) -> list[dict]:
    return [r for split in ("train", "validation", "test") for r in prepared.rows(split)]


def assert_accounted(prepared) -> None:
    """The pipeline's core promise: every row read is kept or in rejects.jsonl."""
    counts = prepared.manifest["counts"]
    rejects = read_jsonl(prepared.rejects_path)
    kept = len(kept_rows(prepared))
    assert kept == counts["kept"]
    assert len(rejects) == counts["rejected"]
    assert kept + len(rejects) == counts["read"]


@pytest.fixture(scope="session")
def word_tokenizer():
    """A real fast tokenizer (HF `tokenizers` WordLevel, one token per word or punctuation run) with a chat
    template, so token counts are easy to reason about: '<|user|> hi <|end|>' is 3 + 1 + 3 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "<|", "|>", "system", "user", "assistant", "end", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
                               "{% endfor %}")
    return tokenizer
