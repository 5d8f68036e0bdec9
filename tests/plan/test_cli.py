"""`tuneops plan FILE` as a user runs it: a real subprocess, the real SmolLM2 tokenizer and config, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.support.smollm2 import shared_home
from tests.train.helpers import REPO, example_doc


def tuneops(*args):
    return subprocess.run([sys.executable, "-m", "tuneops.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_smollm2_example_passes_with_real_tokenizer_and_config(smollm2_dir):
    res = tuneops("plan", "examples/smollm2-lora.yaml", "--home", str(shared_home()))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "lora of smollm2-135m-instruct (config.json in" in out
    for line in ("architecture         ok", "lora.targetModules   ok", "dataset              ok",
                 "chatTemplate         ok", "lengths              ok"):
        assert line in out, out
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj found in" in out
    assert "* lora   single" in out and "preflight: OK" in out
    assert "tokens/epoch" in out  # the local dataset was counted: time per epoch is given


def test_llama3_example_without_weights_uses_the_table_and_skips_tokenizer_checks():
    res = tuneops("plan", "examples/llama3-qlora.yaml", "--output", "json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    checks = {c["name"]: c for c in plan["checks"]}
    assert plan["model"] == "Llama-3-8B" and plan["architectureSource"] == "built-in table"
    assert checks["chatTemplate"]["skipped"] and "not in the local cache" in checks["chatTemplate"]["message"]
    assert checks["dataset"]["skipped"] and "remote" in checks["dataset"]["message"]
    assert checks["memory"]["ok"] and "<= 22.0 GiB usable on A10G-24G" in checks["memory"]["message"]
    selected = next(m for m in plan["memory"] if m["selected"])
    assert (selected["method"], selected["strategy"], selected["processes"]) == ("qlora", "deepspeed-zero2", 2)


def test_bad_target_and_bad_rows_fail_with_names(smollm2_dir, tmp_path):
    rows = [json.loads(line) for line in (REPO / "examples/data/support-tickets.jsonl").read_text().splitlines()[:40]]
    rows[2] = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}
    rows[5] = {"messages": [{"role": "assistant", "content": "first"}]}
    rows[8] = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = example_doc()
    doc["spec"]["dataset"]["source"] = "data.jsonl"
    doc["spec"]["lora"]["targetModules"] = ["q_proj", "q_projx"]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    res = tuneops("plan", str(tmp_path / "job.yaml"), "--home", str(shared_home()), "-o", "yaml")
    assert res.returncode == 1
    checks = {c["name"]: c for c in yaml.safe_load(res.stdout)["checks"]}
    target = checks["lora.targetModules"]
    assert not target["ok"]
    assert target["message"].startswith("lora.targetModules: 'q_projx' not found in smollm2-135m-instruct (llama)")
    assert "available: " in target["message"] and "q_proj" in target["message"]
    data = checks["dataset"]
    assert not data["ok"] and "3 invalid (7.5%)" in data["message"]
    assert "line 3: messages[1].role" in data["message"] and "line 6:" in data["message"]


def test_not_a_finetunejob_exits_2(tmp_path):
    (tmp_path / "x.yaml").write_text("kind: ConfigMap\napiVersion: v1\n")
    res = tuneops("plan", str(tmp_path / "x.yaml"), "--no-sample")
    assert res.returncode == 2 and "expected exactly one FineTuneJob" in res.stderr
