"""Tiny random-initialised models of each supported family, built from their config classes, with a tiny
word-level tokenizer carrying the family's real special tokens. Saved as normal checkpoints so tests load
them through the same `path` source the runtime uses. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

# Per family: config class, extra config, special tokens, and which of them are bos/eos/pad/unk in the
# *raw* tokenizer (before tuneops' fix-ups), mirroring the official checkpoints' quirks.
FAMILY_SPECS: dict[str, dict] = {
    "llama3": {
        "config": "LlamaConfig", "extra": {},
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|finetune_right_pad_id|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    },
    "mistral": {
        "config": "MistralConfig", "extra": {},
        "specials": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        "tokens": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    },
    "gemma2": {
        "config": "Gemma2Config", "extra": {},
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        "tokens": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    },
    "gemma3": {
        "config": "Gemma3TextConfig", "extra": {},
        "specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        "tokens": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    },
    "qwen2": {
        "config": "Qwen2Config", "extra": {},
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|endoftext|>"},
    },
    "smollm2": {
        "config": "LlamaConfig", "extra": {"tie_word_embeddings": True},
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
    },
}

WORDS = ["hello", "ticket", "login", "billing", "api", "low", "high", "system", "user", "assistant", "model",
         "{", "}", ":", ",", '"', "category", "severity", "topic", "the", "is", "broken", "you", "triage"]
UNK = "[UNK]"


def tiny_tokenizer(family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILY_SPECS[family]
    vocab_list = list(dict.fromkeys(spec["specials"] + WORDS + [UNK]))
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab_list)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokens = {"unk_token": UNK, **spec["tokens"]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **tokens)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in spec["specials"]
                                                                if t not in tokens.values()]})
    return tokenizer


def tiny_config(family: str, vocab_size: int):
    import transformers

    spec = FAMILY_SPECS[family]
    # 64-wide layers: bitsandbytes 4-bit quantises in blocks of 64.
    return getattr(transformers, spec["config"])(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256, **spec["extra"])


def tiny_model_dir(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Save a tiny random `family` model + tokenizer into out_dir (a normal transformers checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(family)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer)))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
