"""A tiny random Llama, a byte-level BPE tokenizer with a ChatML template and a LoRA adapter, built offline in
seconds, so evaluation/export/registry logic is tested without the real base model."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM = 'You triage support tickets. Answer with JSON only: {"category", "severity", "topic"}.'
TOPICS = [("login", "2FA code"), ("billing", "invoice"), ("api", "timeout"), ("api", "500 error"),
          ("login", "password reset"), ("billing", "refund")]
SEVERITIES = [("low", "no rush"), ("medium", "it keeps happening"), ("high", "urgent")]


def ticket_rows(n: int) -> list[dict]:
    """Canonical rows shaped like examples/data/support-tickets.jsonl."""
    rows = []
    for i in range(n):
        category, topic = TOPICS[i % len(TOPICS)]
        severity, phrase = SEVERITIES[(i // len(TOPICS)) % len(SEVERITIES)]
        answer = json.dumps({"category": category, "severity": severity, "topic": topic})
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Problem with the {topic}: {phrase}."},
            {"role": "assistant", "content": answer},
        ]})
    return rows


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for r in ticket_rows(36) for m in r["messages"]] + ["system user assistant"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = CHATML
    return fast


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def build_base_dir(path: Path) -> Path:
    """A base model folder (config + safetensors + tokenizer), like resolve_model_dir() returns."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_adapter(base_dir: Path, out: Path, seed: int = 1, scale: float = 0.5) -> Path:
    """A LoRA adapter with non-zero B matrices (a fresh LoRA is a no-op), saved in safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj",
                                                                                     "up_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out
