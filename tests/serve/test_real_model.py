"""The packaged SmolLM2-135M-Instruct (materialised once by tuneops.runtime.models), served from a registry
version directory and asked a chat question through huggingface_hub.InferenceClient and the openai client.
~1-2 min on 2 idle cores (most of it loading/materialising the model)."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    from tuneops.api.model_source import BaseModelSpec
    from tuneops.runtime.models import resolve_model_dir
    from tuneops.runtime.serve.loader import load
    from tuneops.runtime.serve.server import BackgroundServer
    from tuneops.runtime.serve.state import ServeConfig

    base = {"family": "smollm2", "source": {"packaged": "smollm2-135m-instruct"}}
    weights = resolve_model_dir(BaseModelSpec.model_validate(base))  # TUNEOPS_HOME/models/<sha>, reused
    version = tmp_path_factory.mktemp("registry") / "smollm2-chat" / "1"
    version.mkdir(parents=True)
    (version / "merged").symlink_to(weights, target_is_directory=True)
    (version / "modelversion.yaml").write_text(yaml.safe_dump({
        "apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "smollm2-chat-v1"},
        "spec": {"model": "smollm2-chat", "version": 1, "baseModel": base, "merged": {"uri": str(version / "merged")}}}))
    with BackgroundServer(ServeConfig(max_total_tokens=1024), lambda: load(str(version))) as server:
        yield server


def test_inference_client_chat_answers_paris(smollm2_server):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=smollm2_server.url, timeout=300)
    out = client.chat_completion(QUESTION, max_tokens=12, temperature=0)
    assert "paris" in out.choices[0].message.content.lower(), out
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.model == "dummy"  # like TGI: the request's model is echoed (InferenceClient sends "dummy")
    assert InferenceClient(model=smollm2_server.url, provider="hf-inference").get_endpoint_info()["model_id"] \
        == "smollm2-chat@1"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat_completion(QUESTION, max_tokens=12, temperature=0, stream=True))
    assert streamed == out.choices[0].message.content


def test_openai_client_chat_ends_on_end_of_turn(smollm2_server):
    openai = pytest.importorskip("openai")
    oai = openai.OpenAI(base_url=smollm2_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    out = oai.chat.completions.create(model="tgi", messages=QUESTION, max_tokens=40, temperature=0)
    assert "paris" in out.choices[0].message.content.lower()
    assert out.choices[0].finish_reason == "stop"  # the model ended its turn: <|im_end|> is its eos
    assert "<|im_end|>" not in out.choices[0].message.content
