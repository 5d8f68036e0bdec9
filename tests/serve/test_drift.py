"""Input drift: prompts like the training data raise no flag; prompts from another distribution do, both in
the monitor itself and through a running server's `/drift` and metrics."""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

import httpx
import pytest

from tuneops.runtime.serve.drift import (DriftMonitor, DriftProfile, build_profile, ks_statistic, prompts_from_jsonl,
                                         psi)
from tuneops.runtime.serve.server import BackgroundServer
from tuneops.runtime.serve.state import ServeConfig

TICKETS = Path(__file__).parents[2] / "examples" / "data" / "support-tickets.jsonl"


def rows() -> list[dict]:
    return [json.loads(line) for line in TICKETS.read_text().splitlines() if line.strip()]


def other_distribution(n: int) -> list[str]:
    """Python source code: nothing like support tickets (different vocabulary and lengths)."""
    lines = [ln for ln in inspect.getsource(argparse).splitlines() if ln.strip()]
    return ["\n".join(lines[i * 6:(i + 1) * 6]) for i in range(n)]


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, list[dict]]:
    data = rows()
    cut = int(len(data) * 0.7)
    train = tmp_path_factory.mktemp("drift") / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data[:cut]))
    return train, data[cut:]


def test_statistics():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25
    assert ks_statistic([1, 2, 3, 4], [1, 2, 3, 4]) == 0
    assert ks_statistic([1, 2, 3], [10, 11, 12]) == 1


def test_profile_round_trips_and_holds_no_text(tmp_path, tiny_loaded, split):
    train, _ = split
    tok = tiny_loaded.tokenizer
    profile = build_profile(tok(p)["input_ids"] for p in prompts_from_jsonl(train))
    path = profile.save(tmp_path / "drift_profile.json")
    assert DriftProfile.load(path) == profile
    assert math.isclose(sum(profile.length_probs), 1.0) and math.isclose(sum(profile.token_probs.values()), 1.0)
    assert "ticket" not in path.read_text().lower()  # aggregates only, never the prompts
    with pytest.raises(ValueError, match="not a drift profile"):
        DriftProfile.load(train)


def test_bad_reference_line_is_reported_with_its_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        prompts_from_jsonl(bad)


def test_monitor_flags_only_the_other_distribution(tiny_loaded, split):
    train, held_out = split
    tok = tiny_loaded.tokenizer
    profile = build_profile(tok(p)["input_ids"] for p in prompts_from_jsonl(train))
    same = DriftMonitor(profile, window=100)
    for row in held_out[:100]:
        same.observe(tok("\n".join(m["content"] for m in row["messages"] if m["role"] != "assistant"))["input_ids"])
    report = same.report()
    assert report["window"] == min(100, len(held_out)) and report["drift"] is False, report

    other = DriftMonitor(profile, window=100)
    for text in other_distribution(100):
        other.observe(tok(text)["input_ids"])
    report = other.report()
    assert report["drift"] is True and report["psi"]["tokens"] > 0.25, report

    few = DriftMonitor(profile, min_samples=30)
    for text in other_distribution(5):
        few.observe(tok(text)["input_ids"])
    assert few.report()["drift"] is False  # too few samples to judge


def test_server_reports_drift(tiny_loaded, split):
    train, held_out = split
    config = ServeConfig(drift_reference=train, drift_window=40, drift_min_samples=30)
    with BackgroundServer(config, lambda: tiny_loaded) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        for row in held_out[:40]:
            messages = [m for m in row["messages"] if m["role"] != "assistant"]
            assert c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1}).status_code == 200
        report = c.get("/drift").json()
        assert report["enabled"] and report["window"] == 40 and report["drift"] is False, report
        assert "tuneops_drift_detected 0.0" in c.get("/metrics").text
        for text in other_distribution(40):
            assert c.post("/generate", json={"inputs": text, "parameters": {"max_new_tokens": 1}}).status_code == 200
        report = c.get("/drift").json()
        assert report["drift"] is True and report["reasons"], report
        metrics = c.get("/metrics").text
        assert "tuneops_drift_detected 1.0" in metrics and 'tuneops_drift_psi{feature="tokens"}' in metrics
