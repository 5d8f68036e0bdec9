"""Cleaning rules one by one (each switchable), PII redaction (hits and near-misses), dedupe."""

from __future__ import annotations

import pytest

from tuneops.api.dataset import CleaningSpec
from tuneops.runtime.data import prepare_dataset
from tuneops.runtime.data.cleaning import (build_cleaner, collapse_whitespace, dedupe_text, normalize_unicode,
                                           strip_control_chars, strip_html, strip_markdown)
from tuneops.runtime.data.pii import Redactor

from .conftest import assert_accounted, chat, kept_rows, make_spec, read_jsonl, write_jsonl


def test_normalize_unicode_nfc():
    decomposed = "Cafe\u0301 and A\u030a"
    assert normalize_unicode(decomposed) == "Café and Å"
    assert normalize_unicode("plain ascii") == "plain ascii"


@pytest.mark.parametrize("text, expected", [
    ("a\x00b\x07c", "abc"),
    ("line1\r\nline2\rline3", "line1\nline2\nline3"),
    ("keep\ttab\nand newline", "keep\ttab\nand newline"),
    ("\ufeffbom inside \u200bzero width", "bom inside zero width"),
    ("lone \ud800 surrogate", "lone  surrogate"),
    ("c1 \x85next \x9fcontrol", "c1 \nnext control"),
])
def test_strip_control_chars(text, expected):
    assert strip_control_chars(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("  too   many    spaces  ", "too many spaces"),
    ("trailing   \nspaces\t\t\n", "trailing\nspaces"),
    ("para\n\n\n\n\nnext", "para\n\nnext"),
    ("def f():\n    return  1", "def f():\n    return 1"),  # indentation kept, internal runs collapsed
    ("nbsp\u00a0\u00a0here\u3000too", "nbsp here too"),
    ("already clean", "already clean"),
])
def test_collapse_whitespace(text, expected):
    assert collapse_whitespace(text) == expected


def test_strip_html():
    text = "<p>Hello&nbsp;<b>world</b> &amp; co</p><script>alert(1)</script><br/>next<style>x{}</style>"
    assert strip_html(text) == "Hello\xa0world & co\n\nnext"
    assert strip_html("2 < 3 and 5 > 4") == "2 < 3 and 5 > 4"  # not tags
    assert collapse_whitespace(strip_html("<div>a</div>  <div>b</div>")) == "a\nb"


def test_strip_markdown():
    text = "# Title\n**bold** and *it* and _it2_ see [docs](http://x.y) ![img](a.png) `code`\n```py\nx = 1\n```"
    assert strip_markdown(text) == "Title\nbold and it and it2 see docs img code\nx = 1\n"
    assert strip_markdown("2 * 3 * 4 and snake_case_name") == "2 * 3 * 4 and snake_case_name"
    assert strip_markdown('{"a": "b"}') == '{"a": "b"}'


def test_rules_are_switchable(tmp_path):
    messy = "  <b>Caf\u0065\u0301</b>   **now**\x00 "
    path = write_jsonl(tmp_path / "d.jsonl", [chat(messy, "ok")])
    off = {k: False for k in ("normalizeUnicode", "stripControlChars", "collapseWhitespace", "stripHtml",
                              "stripMarkdown")}
    raw = prepare_dataset(make_spec(path, cleaning=off), out_dir=tmp_path / "raw")
    assert kept_rows(raw)[0]["messages"][0]["content"] == messy
    default = prepare_dataset(make_spec(path), out_dir=tmp_path / "default")
    assert kept_rows(default)[0]["messages"][0]["content"] == "<b>Café</b> **now**"
    full = prepare_dataset(make_spec(path, cleaning={"stripHtml": True, "stripMarkdown": True}), out_dir=tmp_path / "f")
    assert kept_rows(full)[0]["messages"][0]["content"] == "Café now"
    assert default.version != raw.version != full.version


def test_cleaner_default_fast_path_matches_the_composed_rules():
    fast = build_cleaner(CleaningSpec())
    texts = ["plain", "a\tb\n\n\n\nc  d ", "Cafe\u0301\x00 ", "x\r\ny", "\u00a0lead", "", "\ud800"]
    for text in texts:
        assert fast(text) == collapse_whitespace(strip_control_chars(normalize_unicode(text)))


def test_length_filters_chars(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("hi", "yo"), chat("a" * 50, "b" * 50), chat("mid size", "ok")])
    prepared = prepare_dataset(make_spec(path, cleaning={"minChars": 5, "maxChars": 60}), out_dir=tmp_path / "o")
    assert [(r["line"], r["reason"]) for r in read_jsonl(prepared.rejects_path)] == [(1, "too_short"),
                                                                                     (2, "too_long_chars")]
    assert prepared.manifest["counts"]["invalid"] == 0 and prepared.manifest["counts"]["filtered"] == 2
    assert_accounted(prepared)


@pytest.mark.parametrize("text, expected", [
    ("mail me: jane.doe+x@mail.example.co.uk now", "mail me: [EMAIL] now"),
    ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]"),
    ("call 555-123-4567 today", "call [PHONE] today"),
    ("e164 +14155550123.", "e164 [PHONE]."),
    ("server 192.168.10.12 down", "server [IP] down"),
    ("key AKIAIOSFODNN7EXAMPLE here", "key [KEY] here"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [KEY]"),
    ("export OPENAI=sk-proj-abcdefghijklmnopqrstuvwx", "export OPENAI=[KEY]"),
    ("password=hunter2024!", "password=[KEY]"),
    ('"api_key": "a1b2c3d4e5f6"', '"api_key": "[KEY]"'),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.abcdefghijkl", "jwt [KEY]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[KEY]"),
])
def test_pii_redaction_hits(text, expected):
    assert Redactor()(text) == expected


@pytest.mark.parametrize("text", [
    "released 2026-11-25 at 10:30", "version 1.2.3 and 10.0.1", "order #123456 costs $1,234.56",
    "the password: production is down", "ratio 3/4 and 12 items", "room 101, floor 3", "isbn 978 3 16",
    "call me at 12.11.2026", "user@localhost is not an address",
])
def test_pii_redaction_leaves_lookalikes(text):
    assert Redactor()(text) == text


def test_redaction_counts_in_manifest(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("reach me at a@b.io or +1 555 010 0199", "ok"),
                                              chat("no pii here", "fine")])
    prepared = prepare_dataset(make_spec(path, cleaning={"redactPII": True}), out_dir=tmp_path / "o")
    assert prepared.manifest["redactions"] == {"email": 1, "phone": 1}
    assert "[EMAIL]" in kept_rows(prepared)[0]["messages"][0]["content"]
    plain = prepare_dataset(make_spec(path), out_dir=tmp_path / "p")
    assert "a@b.io" in kept_rows(plain)[0]["messages"][0]["content"] and plain.manifest["redactions"] is None


def test_exact_dedupe_is_on_normalised_text(tmp_path):
    rows = [chat("Reset my password", "Sure."), chat("reset   MY password", "sure."),
            chat("Reset my password", "Different answer"), chat("Ｒeset my password", "Sure.")]  # fullwidth R
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    prepared = prepare_dataset(make_spec(path), out_dir=tmp_path / "o")
    assert [(r["line"], r["reason"]) for r in read_jsonl(prepared.rejects_path)] == [(2, "duplicate"), (4, "duplicate")]
    none = prepare_dataset(make_spec(path, cleaning={"dedupe": "none"}), out_dir=tmp_path / "n")
    assert none.manifest["counts"]["kept"] == 4
    assert dedupe_text(rows[0]["messages"]) == dedupe_text(rows[1]["messages"])


def test_near_dedupe_minhash(tmp_path):
    base = "My order 1234 arrived damaged and the box was completely crushed, I would like a replacement please"
    rows = [chat(base, "We will send a replacement."),
            chat(base.replace("completely", "totally"), "We will send a replacement."),  # near copy
            chat("How do I change the email address on my account settings page?", "Go to settings."),
            chat(base + "!", "We will send a replacement."),  # near copy
            chat("The mobile app crashes on start since the last update on Android", "Reinstall it.")]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    exact = prepare_dataset(make_spec(path, cleaning={"dedupe": "exact"}), out_dir=tmp_path / "e")
    assert exact.manifest["counts"]["kept"] == 5
    near = prepare_dataset(make_spec(path, cleaning={"dedupe": "near", "nearDuplicateThreshold": 0.7}),
                           out_dir=tmp_path / "n")
    rejects = read_jsonl(near.rejects_path)
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "near_duplicate"), (4, "near_duplicate")]
    assert f"{path}:1" in rejects[0]["message"]  # names the row it duplicates
    strict = prepare_dataset(make_spec(path, cleaning={"dedupe": "near", "nearDuplicateThreshold": 1.0}),
                             out_dir=tmp_path / "s")
    assert strict.manifest["counts"]["kept"] == 5  # candidates are verified: 1.0 means identical 5-gram sets
    assert_accounted(near)
