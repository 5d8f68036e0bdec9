"""Real clients against a real uvicorn server: huggingface_hub.InferenceClient and the openai client get the
same answers as transformers' greedy `generate` on the same model."""

from __future__ import annotations

import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server) -> InferenceClient:
    return InferenceClient(model=server.url, timeout=60)


def test_text_generation_posts_to_root_and_prepends_the_prompt_like_tgi(client, greedy):
    expected = greedy(PROMPT, 6)
    assert client.text_generation(PROMPT, max_new_tokens=6) == PROMPT + expected
    assert client.text_generation(PROMPT, max_new_tokens=6, return_full_text=False) == expected


def test_text_generation_details(client, greedy):
    out = client.text_generation(PROMPT, max_new_tokens=5, details=True, return_full_text=False)
    assert out.generated_text == greedy(PROMPT, 5)
    assert out.details.finish_reason == "length"
    assert out.details.generated_tokens == 5 == len(out.details.tokens)
    assert "".join(t.text for t in out.details.tokens) == out.generated_text
    assert all(t.logprob <= 0 and t.special is False for t in out.details.tokens)


def test_text_generation_stream(client, greedy):
    pieces = list(client.text_generation(PROMPT, max_new_tokens=7, stream=True))
    assert len(pieces) == 7
    assert "".join(pieces) == greedy(PROMPT, 7)


def test_text_generation_stream_with_details(client, greedy):
    events = list(client.text_generation(PROMPT, max_new_tokens=4, stream=True, details=True))
    assert [e.index for e in events] == [1, 2, 3, 4]
    assert all(e.details is None and e.generated_text is None for e in events[:-1])
    last = events[-1]
    assert last.details.finish_reason == "length" and last.details.generated_tokens == 4
    assert last.generated_text == greedy(PROMPT, 4)


def test_sampling_with_seed_is_reproducible(client):
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.3, top_k=40, top_p=0.95, seed=11,
                  details=True, return_full_text=False)
    first, second = client.text_generation(PROMPT, **kwargs), client.text_generation(PROMPT, **kwargs)
    assert first.generated_text == second.generated_text
    assert first.details.seed == 11


def test_stop_sequence_ends_generation_and_is_kept(client, greedy):
    full = greedy(PROMPT, 8)
    stop = full.split()[1]  # the second word the model says
    out = client.text_generation(PROMPT, max_new_tokens=8, stop=[stop], details=True, return_full_text=False)
    assert out.details.finish_reason == "stop_sequence"
    assert out.generated_text.endswith(stop) or stop in out.generated_text
    assert full.startswith(out.generated_text)


def test_validation_errors_raise_the_client_validation_error(client):
    with pytest.raises(ValidationError, match="temperature"):
        client.text_generation(PROMPT, max_new_tokens=3, temperature=-1.0)
    with pytest.raises(ValidationError, match="top_p"):
        list(client.text_generation(PROMPT, max_new_tokens=3, top_p=1.0, stream=True))  # error inside the stream


def test_chat_completion(client, greedy):
    out = client.chat_completion(MESSAGES, max_tokens=6, temperature=0)
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == greedy.chat(MESSAGES, 6)
    assert choice.finish_reason == "length"
    assert out.usage.completion_tokens == 6 and out.usage.prompt_tokens > 6


def test_chat_completion_stream(client, greedy):
    chunks = list(client.chat_completion(MESSAGES, max_tokens=5, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content for c in chunks) == greedy.chat(MESSAGES, 5)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_health_and_info_through_the_client(server):
    client = InferenceClient(model=server.url, provider="hf-inference")
    assert client.health_check() is True
    info = client.get_endpoint_info()
    assert info["max_total_tokens"] == 512 and info["model_pipeline_tag"] == "text-generation"


openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_openai_chat_completion(oai, greedy):
    out = oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=6, temperature=0)
    assert out.choices[0].message.content == greedy.chat(MESSAGES, 6)
    assert out.usage.completion_tokens == 6
    assert out.model  # TGI reports model_id when the request says "tgi"


def test_openai_chat_completion_stream(oai, greedy):
    stream = oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=5, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy.chat(MESSAGES, 5)
    assert chunks[-1].usage.completion_tokens == 5


def test_openai_completions(oai, greedy):
    out = oai.completions.create(model="tgi", prompt=PROMPT, max_tokens=6, temperature=0)
    assert out.choices[0].text == greedy(PROMPT, 6)
    stream = oai.completions.create(model="tgi", prompt=PROMPT, max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream) == greedy(PROMPT, 4)


def test_openai_client_sees_validation_as_422(oai):
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=3, top_p=1.5)
