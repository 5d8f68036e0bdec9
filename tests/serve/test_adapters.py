"""Adapter-only blue/green with the built-in server: one tiny base, two different LoRA adapters (registry
versions bot@1 and bot@2), a real uvicorn server on loopback, real huggingface_hub and openai clients.

Reference outputs come from peft's own greedy `generate` with one adapter at a time, so "the server picked
the right adapter" and "mixed batches do not leak one adapter into another row" are both checked against
an independent computation."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

from tuneops.runtime.serve.adapters import BASE, file_sha256, load_adapter_set, parse_adapter_args
from tuneops.runtime.serve.loader import VersionNotFound

TOKEN = "s3cret"
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "Hello, my name is"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
N = 8  # new tokens per request


def write_version(home: Path, model: str, version: int, base_dir: Path, *, adapter: bool = True) -> Path:
    directory = home / "registry" / model / str(version)
    directory.mkdir(parents=True)
    kind = "adapter" if adapter else "merged"
    spec = {"model": model, "version": version, "baseModel": {"family": "smollm2", "source": {"path": str(base_dir)}},
            kind: {"uri": str(directory / kind)}}
    (directory / "modelversion.yaml").write_text(yaml.safe_dump({
        "apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": f"{model}-v{version}"},
        "spec": spec}))
    return directory


def make_adapter(base_dir: Path, out: Path, seed: int) -> None:
    """A LoRA adapter with random (non-zero) lora_B: each seed answers differently from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "lm_head"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(out)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir) -> Path:
    home = tmp_path_factory.mktemp("adapters-home")
    for version, seed in ((1, 1), (2, 2)):
        make_adapter(tiny_model_dir, write_version(home, "bot", version, tiny_model_dir) / "adapter", seed)
    return home


@pytest.fixture(scope="module")
def reference(home, tiny_model_dir):
    """peft greedy generation with exactly one adapter (or none): name -> prompt -> text."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model = PeftModel.from_pretrained(base, home / "registry/bot/1/adapter", adapter_name="v1")
    model.load_adapter(home / "registry/bot/2/adapter", adapter_name="v2")
    model.eval()
    chat_prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)

    def run(prompt: str, add_special_tokens: bool = True) -> str:
        ids = torch.tensor([tok(prompt, add_special_tokens=add_special_tokens)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    refs: dict[str, dict[str, str]] = {}
    for name in ("v1", "v2", BASE):
        if name == BASE:
            with model.disable_adapter():
                refs[name] = {p: run(p) for p in PROMPTS} | {"chat": run(chat_prompt, False)}
        else:
            model.set_adapter(name)
            refs[name] = {p: run(p) for p in PROMPTS} | {"chat": run(chat_prompt, False)}
    for p in [*PROMPTS, "chat"]:  # the test can tell the three apart
        assert len({refs["v1"][p], refs["v2"][p], refs[BASE][p]}) == 3, p
    return refs


@pytest.fixture(scope="module")
def adapters_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cm") / "adapters.json"
    path.write_text(json.dumps({"default": "v1"}))
    return path


@pytest.fixture(scope="module")
def server(home, adapters_file):
    from tuneops.runtime.serve.server import BackgroundServer
    from tuneops.runtime.serve.state import ServeConfig

    config = ServeConfig(max_total_tokens=512, max_input_tokens=256, api_token=TOKEN, adapters_file=adapters_file)
    with BackgroundServer(config, lambda: load_adapter_set(("v1", "bot@1"), [("v2", "bot@2")], home=home)) as s:
        yield s


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        c.post("/adapters/default", json={"adapter": "v1"}).raise_for_status()
        yield c


def generate(http: httpx.Client, prompt: str, adapter: str | None = None) -> str:
    params: dict = {"max_new_tokens": N, "do_sample": False}
    if adapter is not None:
        params["adapter_id"] = adapter
    r = http.post("/generate", json={"inputs": prompt, "parameters": params})
    assert r.status_code == 200, r.text
    return r.json()["generated_text"]


def test_info_and_admin_list_the_loaded_adapters(http, home):
    info = http.get("/info").json()
    assert info["default_adapter"] == "v1"
    listed = http.get("/adapters").json()
    assert listed["default"] == "v1"
    assert [(a["name"], a["version"]) for a in listed["adapters"]] == [("v1", "bot@1"), ("v2", "bot@2")]
    assert listed["adapters"][1]["sha256"] == file_sha256(home / "registry/bot/2/adapter/adapter_model.safetensors")
    assert {m["id"] for m in http.get("/v1/models").json()["data"]} == {"bot", "v1", "v2"}
    # the admin endpoint sits behind the same bearer token as generation
    assert httpx.post(http.base_url.join("/adapters/default"), json={"adapter": "v2"}).status_code == 401
    bad = http.post("/adapters/default", json={"adapter": "v3"})
    assert bad.status_code == 422 and "v3" in bad.json()["error"] and "v1, v2" in bad.json()["error"]


def test_huggingface_hub_selects_the_adapter_per_request(server, reference):
    client = InferenceClient(model=server.url, token=TOKEN, timeout=60)
    prompt = PROMPTS[0]
    for name in ("v1", "v2", BASE):
        assert client.text_generation(prompt, max_new_tokens=N, adapter_id=name,
                                      return_full_text=False) == reference[name][prompt]
        streamed = "".join(client.text_generation(prompt, max_new_tokens=N, adapter_id=name, stream=True))
        assert streamed == reference[name][prompt]
    # no adapter_id: the default (v1); the hub client's placeholder chat model "dummy" also means the default
    assert client.text_generation(prompt, max_new_tokens=N, return_full_text=False) == reference["v1"][prompt]
    assert client.chat_completion(MESSAGES, max_tokens=N, temperature=0).choices[0].message.content \
        == reference["v1"]["chat"]
    with pytest.raises(ValidationError, match="unknown adapter 'nope'"):
        client.text_generation(prompt, max_new_tokens=N, adapter_id="nope")


openai = pytest.importorskip("openai")


def test_openai_model_field_selects_the_adapter(server, reference):
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)
    for name in ("v1", "v2"):
        out = oai.chat.completions.create(model=name, messages=MESSAGES, max_tokens=N, temperature=0)
        assert out.choices[0].message.content == reference[name]["chat"] and out.model == name
        stream = oai.chat.completions.create(model=name, messages=MESSAGES, max_tokens=N, temperature=0,
                                             stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reference[name]["chat"]
        done = oai.completions.create(model=name, prompt=PROMPTS[1], max_tokens=N, temperature=0)
        assert done.choices[0].text == reference[name][PROMPTS[1]]
    for default_alias in ("tgi", "bot"):  # TGI's placeholder and the served model name mean the default
        out = oai.completions.create(model=default_alias, prompt=PROMPTS[1], max_tokens=N, temperature=0)
        assert out.choices[0].text == reference["v1"][PROMPTS[1]]
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.chat.completions.create(model="v9", messages=MESSAGES, max_tokens=N, temperature=0)
    assert unknown.value.response.json() == {  # TGI's error shape, naming the loaded adapters
        "error": "`model`: unknown adapter 'v9'; loaded: v1, v2, __base__", "error_type": "not_found"}


def test_mixed_adapter_concurrent_requests_match_each_adapter_alone(http, reference):
    jobs = [(p, a) for p in PROMPTS for a in ("v1", "v2", BASE)] * 2
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: generate(http, *job), jobs))
    assert results == [reference[a][p] for p, a in jobs]
    metrics = http.get("/metrics").text
    assert 'tuneops_adapter_requests_total{adapter="v2"}' in metrics


def test_engine_mixed_batch_and_join_keep_each_row_on_its_adapter(server, reference):
    """Deterministic batching: three adapters prefilled together, then a fourth row joins mid-decode (the KV
    cache merge); every row still produces its own adapter's greedy text."""
    from tuneops.runtime.serve.engine import Engine, SamplingParams, Sequence

    loaded = server.state.loaded
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=8, mixed_adapters=True)
    peft = {name: info.peft_name for name, info in loaded.adapters.adapters.items()} | {BASE: None}
    texts: dict[int, str] = {}

    def seq(i: int, prompt: str, adapter: str) -> Sequence:
        ids = loaded.tokenizer(prompt)["input_ids"]

        def emit(event, i=i) -> None:
            if getattr(event, "finish_reason", None):
                texts[i] = event.generated_text
        return Sequence(f"r{i}", ids, SamplingParams(max_new_tokens=N), emit=emit, adapter=peft[adapter])

    plan = [(PROMPTS[0], "v1"), (PROMPTS[2], "v2"), (PROMPTS[3], BASE), (PROMPTS[1], "v2")]
    engine.add([seq(i, p, a) for i, (p, a) in enumerate(plan[:3])])
    engine.step()
    engine.step()
    engine.add([seq(3, *plan[3])])  # joins a running batch with different adapters and a longer cache
    while engine.running:
        engine.step()
    assert [texts[i] for i in range(4)] == [reference[a][p] for p, a in plan]


def test_default_switch_under_load_has_zero_failures(http, server, reference):
    prompt = PROMPTS[0]
    old, new = reference["v1"][prompt], reference["v2"][prompt]
    stop = threading.Event()
    records: list[tuple[float, float, int, str]] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
            while not stop.is_set():
                started = time.monotonic()
                r = c.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": N, "do_sample": False}})
                with lock:
                    records.append((started, time.monotonic(), r.status_code, r.json().get("generated_text", r.text)))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    def wait_until(predicate) -> None:
        deadline = time.monotonic() + 120
        while not predicate():
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), len(records)
            time.sleep(0.05)

    wait_until(lambda: len(records) >= 16)  # the load is running: 16 answered before the switch
    switch_sent = time.monotonic()
    r = http.post("/adapters/default", json={"adapter": "v2"})
    switch_done = time.monotonic()
    wait_until(lambda: sum(rec[0] > switch_done for rec in list(records)) >= 16)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert r.status_code == 200 and r.json()["previous"] == "v1" and r.json()["default"] == "v2"
    failed = [rec for rec in records if rec[2] != 200]
    assert not failed, failed[:3]
    before = [rec for rec in records if rec[1] < switch_sent]
    after = [rec for rec in records if rec[0] > switch_done]
    assert len(before) >= 16 and len(after) >= 16, (len(before), len(after))
    assert all(rec[3] == old for rec in before)
    assert all(rec[3] == new for rec in after)
    assert all(rec[3] in (old, new) for rec in records)  # the ones in between finished on one adapter
    latencies = sorted(rec[1] - rec[0] for rec in records)
    print(f"switch under load: {len(records)} requests from 8 clients, 0 failed, {len(before)} before and "
          f"{len(after)} after the switch, switch call {1000 * (switch_done - switch_sent):.1f} ms, "
          f"request p50 {1000 * latencies[len(latencies) // 2]:.0f} ms")


def test_adapters_file_switches_the_default(http, adapters_file):
    """What a ConfigMap-mounted adapters.json does: the server polls it and applies a changed default."""
    for wanted in ("v2", "v1"):
        tmp = adapters_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"default": wanted}))
        tmp.replace(adapters_file)
        deadline = time.monotonic() + 10
        while http.get("/adapters").json()["default"] != wanted:
            assert time.monotonic() < deadline, f"default never became {wanted}"
            time.sleep(0.1)


def test_loader_refuses_different_bases_and_merged_only_versions(tmp_path, tiny_model_dir):
    other_base = tmp_path / "other-base"
    write_version(tmp_path, "bot", 1, tiny_model_dir)
    (tmp_path / "registry/bot/1/adapter").mkdir()
    write_version(tmp_path, "bot", 2, other_base)
    (tmp_path / "registry/bot/2/adapter").mkdir()
    write_version(tmp_path, "bot", 3, tiny_model_dir, adapter=False)
    (tmp_path / "registry/bot/3/merged").mkdir()
    with pytest.raises(VersionNotFound, match=r"bot@2.*base model.*bot@1.*must share"):
        load_adapter_set((None, "bot@1"), [("b", "bot@2")], home=tmp_path)
    with pytest.raises(VersionNotFound, match=r"bot@3\): merged-only"):
        load_adapter_set((None, "bot@1"), [("c", "bot@3")], home=tmp_path)
    with pytest.raises(VersionNotFound, match="unique"):
        load_adapter_set(("x", "bot@1"), [("x", "bot@1")], home=tmp_path)
    with pytest.raises(ValueError, match="expected NAME="):
        parse_adapter_args(["bot@2"])
    with pytest.raises(ValueError, match="reserved or used twice"):
        parse_adapter_args([f"{BASE}=bot@2"])
