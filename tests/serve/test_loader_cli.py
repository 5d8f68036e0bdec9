"""`--version` resolution (NAME@VERSION, NAME@latest, PATH), base+adapter and merged layouts, and the
`tuneops serve` command as a real process: serves, logs JSON with request ids, drains on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tuneops.runtime.serve.loader import VersionNotFound, load, resolve_version

PROMPT = "The capital of France is"


def write_version(root: Path, model: str, version: int, base_dir: Path, *, adapter: bool) -> Path:
    directory = root / "registry" / model / str(version)
    directory.mkdir(parents=True)
    spec = {"model": model, "version": version,
            "baseModel": {"family": "smollm2", "source": {"path": str(base_dir)}}}
    spec["adapter" if adapter else "merged"] = {"uri": str(directory / ("adapter" if adapter else "merged"))}
    (directory / "modelversion.yaml").write_text(yaml.safe_dump({
        "apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": f"{model}-v{version}"}, "spec": spec}))
    return directory


def greedy_ids(model, tokenizer, n: int = 6) -> list[int]:
    import torch

    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_resolution_errors_name_what_is_missing(tmp_path):
    with pytest.raises(VersionNotFound, match="not in the registry"):
        resolve_version("bot@1", home=tmp_path)
    (tmp_path / "registry" / "bot").mkdir(parents=True)
    with pytest.raises(VersionNotFound, match="has no versions"):
        resolve_version("bot@latest", home=tmp_path)
    with pytest.raises(VersionNotFound, match="must be a number"):
        resolve_version("bot@v1", home=tmp_path)
    with pytest.raises(VersionNotFound, match="no such directory"):
        resolve_version(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VersionNotFound, match="nothing to serve"):
        load(str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "modelversion.yaml").write_text("apiVersion: tuneops.io/v1alpha1\nkind: ModelVersion\n"
                                           "metadata: {name: x}\nspec: {model: x, version: 0}\n")
    with pytest.raises(VersionNotFound, match="spec"):
        load(str(bad))


def test_latest_picks_the_highest_version_and_adapter_is_merged_into_the_base(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj", "down_proj", "lm_head"]))
    with torch.no_grad():  # a non-trivial adapter (lora_B starts at zero)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapted = greedy_ids(peft_model, tokenizer)
    plain = greedy_ids(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)
    assert adapted != plain  # the adapter changes the answer, so the test can tell them apart

    write_version(tmp_path, "bot", 2, tiny_model_dir, adapter=False)
    shutil.copytree(tiny_model_dir, tmp_path / "registry" / "bot" / "2" / "merged")
    v10 = write_version(tmp_path, "bot", 10, tiny_model_dir, adapter=True)
    peft_model.save_pretrained(v10 / "adapter")

    assert resolve_version("bot@latest", home=tmp_path) == v10  # numeric, not lexical, order
    loaded = load("bot@latest", home=tmp_path)
    assert loaded.model_id == "bot@10" and loaded.family == "smollm2"
    assert greedy_ids(loaded.model, loaded.tokenizer) == adapted
    merged = load("bot@2", home=tmp_path)
    assert greedy_ids(merged.model, merged.tokenizer) == plain
    assert merged.tokenizer.eos_token == "<|im_end|>"  # the family's fix-ups apply


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tuneops_serve_process_serves_logs_json_and_drains_on_sigterm(tiny_model_dir, tmp_path):
    port = free_port()
    log_file = (tmp_path / "stderr.log").open("w")
    env = {**os.environ, "TUNEOPS_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "serve", "--version", str(tiny_model_dir),
                             "--host", "127.0.0.1", "--port", str(port), "--max-total-tokens", "2048"],
                            stderr=log_file, stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
            time.sleep(0.2)
        r = httpx.post(url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 3}},
                       headers={"x-request-id": "req-42"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
        with httpx.Client(base_url=url, timeout=60) as c, c.stream(
                "POST", "/generate_stream", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 300}}) as s:
            lines = s.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGTERM)  # Kubernetes stopping the old slot mid-request
            rest = [line for line in lines if line.startswith("data: ")]
        last = json.loads(rest[-1][6:])
        assert last["generated_text"] is not None  # the in-flight request finished
        # uvicorn re-raises the captured SIGTERM once it has shut down gracefully
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_file.close()
    records = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()
               if line.startswith("{")]
    served = [r for r in records if r.get("request_id") == "req-42"]
    assert any(r["msg"] == "generated" and r["generated_tokens"] == 3 for r in served), served
    assert any(r["msg"] == "request" and r["status"] == 200 and r["path"] == "/generate" for r in served)
    assert any(r["msg"] == "shutdown" and r["drained"] is True for r in records)
