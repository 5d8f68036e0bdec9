from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

from .tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Built once per machine (keyed by the builder's source) and reused: reading the tokenizer out of the
    GGUF is the slow part (~20 s)."""
    source = (Path(__file__).parent / "tiny.py").read_bytes()
    target = Path(tempfile.gettempdir()) / "tuneops-test-cache" / f"tiny-serve-{hashlib.sha256(source).hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        make_tiny_model(staging)
        try:
            staging.rename(target)  # atomic: a concurrent session either wins or finds it complete
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path):
    """One loaded tiny model shared by every server in the session (loading is the slow part)."""
    from tuneops.runtime.serve.loader import load

    return load(str(tiny_model_dir))


@pytest.fixture(scope="session")
def server(tiny_loaded):
    """A real uvicorn server on 127.0.0.1:<free port> serving the tiny model."""
    from tuneops.runtime.serve.server import BackgroundServer
    from tuneops.runtime.serve.state import ServeConfig

    with BackgroundServer(ServeConfig(max_total_tokens=512, max_input_tokens=256), lambda: tiny_loaded) as s:
        yield s


@pytest.fixture(scope="session")
def greedy(tiny_loaded):
    """Reference: transformers' own greedy `generate` for a prompt (text in, new text out)."""
    import torch

    tok, model = tiny_loaded.tokenizer, tiny_loaded.model

    def complete(prompt: str, max_new_tokens: int, *, add_special_tokens: bool = True) -> str:
        ids = torch.tensor([tok(prompt, add_special_tokens=add_special_tokens)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def chat(messages: list[dict], max_new_tokens: int) -> str:
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return complete(prompt, max_new_tokens, add_special_tokens=False)

    complete.chat = chat  # type: ignore[attr-defined]
    return complete


@pytest.fixture(autouse=True)
def _client_is_online(monkeypatch):
    """The runtime sets HF_HUB_OFFLINE=1 in this process (it must never reach a hub), and huggingface_hub then
    refuses every request, loopback included. A real InferenceClient runs in another process, without it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
