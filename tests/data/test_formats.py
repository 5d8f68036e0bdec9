"""Format conversion to canonical messages (all five formats, field mappings) and turn validation, through
the whole pipeline so rejects carry the dataset's own field names."""

from __future__ import annotations

import pytest

from tuneops.runtime.data import DataError, prepare_dataset
from tuneops.runtime.data.formats import Converter

from .conftest import assert_accounted, kept_rows, make_spec, read_jsonl, write_jsonl

U, A, S = "user", "assistant", "system"


def turns(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize("fmt, fields, row, expected", [
    ("alpaca", {}, {"instruction": "Add", "input": "1 2", "output": "3"}, turns((U, "Add\n\n1 2"), (A, "3"))),
    ("alpaca", {}, {"instruction": "Hi", "input": "", "output": "Hello", "system": "Be brief"},
     turns((S, "Be brief"), (U, "Hi"), (A, "Hello"))),
    ("alpaca", {"instruction": "q", "output": "meta.answer"}, {"q": "Why", "meta": {"answer": "Because"}},
     turns((U, "Why"), (A, "Because"))),
    ("sharegpt", {}, {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "hi"},
                                        {"from": "gpt", "value": "yo"}, {"from": "user", "value": "more"},
                                        {"from": "chatgpt", "value": "ok"}]},
     turns((S, "S"), (U, "hi"), (A, "yo"), (U, "more"), (A, "ok"))),
    ("sharegpt", {"conversations": "dialog", "from": "speaker", "value": "text"},
     {"dialog": [{"speaker": "human", "text": "a"}, {"speaker": "gpt", "text": "b"}], "system": "Sys"},
     turns((S, "Sys"), (U, "a"), (A, "b"))),
    ("openai-messages", {}, {"messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": [
        {"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": "x"}]}, turns((S, "D"), (U, "part one\npart two"), (A, "x"))),
    ("openai-messages", {"messages": "chat", "role": "r", "content": "c"},
     {"chat": [{"r": "user", "c": "q"}, {"r": "assistant", "c": "a"}]}, turns((U, "q"), (A, "a"))),
    ("prompt-completion", {}, {"prompt": "2+2=", "completion": "4"}, turns((U, "2+2="), (A, "4"))),
    ("prompt-completion", {}, {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}],
                               "completion": [{"role": "assistant", "content": "a"}]},
     turns((S, "S"), (U, "q"), (A, "a"))),
    ("text", {"text": "body"}, {"body": "Once upon a time."}, turns((A, "Once upon a time."))),
])
def test_each_format_converts_to_canonical_messages(tmp_path, fmt, fields, row, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    prepared = prepare_dataset(make_spec(path, fmt, fields=fields), out_dir=tmp_path / "o")
    assert kept_rows(prepared) == [{"messages": expected}]


def test_csv_cells_holding_json_turn_lists(tmp_path):
    import csv
    import json

    path = tmp_path / "d.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["messages"])
        w.writerow([json.dumps(turns((U, "q"), (A, "a")))])
    assert kept_rows(prepare_dataset(make_spec(path), out_dir=tmp_path / "o")) == [{"messages": turns((U, "q"), (A, "a"))}]


def test_system_prompt_is_prepended_unless_the_row_has_one(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": turns((U, "q1"), (A, "a1"))},
                                              {"messages": turns((S, "own"), (U, "q2"), (A, "a2"))}])
    prepared = prepare_dataset(make_spec(path, systemPrompt="Be nice"), out_dir=tmp_path / "o")
    systems = sorted(r["messages"][0]["content"] for r in kept_rows(prepared))
    assert systems == ["Be nice", "own"]


def test_unknown_field_mapping_is_a_spec_error():
    with pytest.raises(DataError, match="not a field of format alpaca") as info:
        Converter("alpaca", {"question": "q"})
    assert info.value.field == "spec.dataset.fields.question"


BAD_ROWS = [
    # (row, reason, field) -- adversarial shapes: wrong roles, nested garbage, wrong types
    ({"messages": turns((U, "q"), (A, "a"), (A, "again"))}, "role_order", "messages[2].role"),
    ({"messages": turns((A, "a"), (U, "q"))}, "role_order", "messages[0].role"),
    ({"messages": turns((U, "q"), (S, "late system"), (A, "a"))}, "role_order", "messages[1].role"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]}, "bad_role",
     "messages[0].role"),
    ({"messages": [{"content": "no role"}]}, "bad_role", "messages[0].role"),
    ({"messages": turns((U, "q"))}, "no_assistant_turn", "messages[0].role"),
    ({"messages": turns((U, "q"), (A, "   \u200b "))}, "empty_turn", "messages[1].content"),
    ({"messages": []}, "empty_turn", "messages[0].content"),
    ({"messages": [[[{"role": "user", "content": "deep"}]]]}, "wrong_type", "messages[0]"),
    ({"messages": {"a": [1, 2, {"b": None}]}}, "wrong_type", "messages"),
    ({"messages": [{"role": "user", "content": {"nested": ["garbage"]}}, {"role": "assistant", "content": "a"}]},
     "wrong_type", "messages[0].content"),
    ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}, "wrong_type",
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None,
                                                    "tool_calls": [{"id": "1"}]}]}, "unsupported_content",
     "messages[1].tool_calls"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                   {"role": "assistant", "content": "a"}]}, "unsupported_content", "messages[0].content[0]"),
    ({"conversation": []}, "missing_field", "messages"),
    ({"messages": "not json"}, "wrong_type", "messages"),
    ([1, 2, 3], "not_an_object", None),
    ("just a string", "not_an_object", None),
    (None, "not_an_object", None),
]


def test_bad_rows_are_rejected_with_reason_and_field_and_nothing_is_lost(tmp_path):
    good = {"messages": turns((U, "fine"), (A, "ok"))}
    path = write_jsonl(tmp_path / "d.jsonl", [good] + [row for row, _, _ in BAD_ROWS])
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 1.0}), out_dir=tmp_path / "o")
    rejects = read_jsonl(prepared.rejects_path)
    assert [(r["line"], r["reason"], r["field"]) for r in rejects] == [
        (i, reason, field) for i, (_, reason, field) in enumerate(BAD_ROWS, start=2)]
    assert [r["row"] for r in rejects] == [row for row, _, _ in BAD_ROWS]  # the original row, untouched
    assert all(r["source"] == str(path) and r["message"] for r in rejects)
    assert kept_rows(prepared) == [good]
    assert_accounted(prepared)


def test_deep_nesting_is_rejected_not_a_crash(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"messages": ' + "[" * 5000 + "]" * 5000 + "}\n" + '{"messages": [{"role": "user", "content": '
                    '"q"}, {"role": "assistant", "content": "a"}]}\n')
    prepared = prepare_dataset(make_spec(path, validation={"maxRejectedFraction": 1.0}), out_dir=tmp_path / "o")
    [reject] = read_jsonl(prepared.rejects_path)
    assert reject["line"] == 1 and reject["reason"] in ("invalid_json", "wrong_type")
    assert_accounted(prepared)


def test_sharegpt_and_alpaca_rejects_name_their_own_fields(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    # Nothing valid is left: the preparation fails, but the rejects are still published to look at.
    with pytest.raises(DataError, match="no rows left to train on"):
        prepare_dataset(make_spec(path, "sharegpt", validation={"maxRejectedFraction": 1.0}), out_dir=tmp_path / "o")
    assert [(r["reason"], r["field"]) for r in read_jsonl(tmp_path / "o" / "rejects.jsonl")] == [
        ("bad_role", "conversations[1].from"), ("empty_turn", "conversations[1].value")]
    assert not (tmp_path / "o" / "train.jsonl").exists()
    path = write_jsonl(tmp_path / "a.jsonl", [{"question": "q"}, {"question": "q", "answer": " "},
                                              {"question": "q", "answer": "a"}])
    prepared = prepare_dataset(make_spec(path, "alpaca", fields={"instruction": "question", "output": "answer"},
                                         validation={"maxRejectedFraction": 1.0}), out_dir=tmp_path / "o2")
    assert [(r["reason"], r["field"]) for r in read_jsonl(prepared.rejects_path)] == [
        ("missing_field", "answer"), ("empty_turn", "answer")]


def test_require_assistant_turn_can_be_switched_off(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": turns((U, "just a question"))}])
    prepared = prepare_dataset(make_spec(path, validation={"requireAssistantTurn": False}), out_dir=tmp_path / "o")
    assert prepared.manifest["counts"]["kept"] == 1
