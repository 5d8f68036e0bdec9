"""Decoder architecture facts the estimates need, from a model's config.json or a built-in table.

The built-in table lets a plan work without the weights (e.g. `tuneops plan` on a laptop for an 8B job).
Shapes follow the Llama-style decoder every supported family uses: attention q/k/v/o projections (grouped
query attention: k/v have num_key_value_heads heads), a gated MLP gate/up/down, RMSNorms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# The Linear modules of one decoder layer, by peft name. `all-linear` adapts all of them (peft leaves
# lm_head out).
DECODER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# What LoRA may target besides the decoder linears (peft supports embeddings and the output head).
OTHER_TARGETS = ("lm_head", "embed_tokens")


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int | None = None          # None = hidden_size // num_attention_heads
    tie_word_embeddings: bool = False
    attention_bias: bool = False          # Qwen2: q/k/v have biases
    norms_per_layer: int = 2              # Gemma 2 has four
    source: str = "built-in table"

    @property
    def head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each decoder-layer Linear."""
        h, i = self.hidden_size, self.intermediate_size
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        params = sum(a * b for a, b in self.linear_shapes().values())
        if self.attention_bias:
            params += self.q_dim + 2 * self.kv_dim
        return params

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def norm_params(self) -> int:
        return self.num_hidden_layers * self.norms_per_layer * self.hidden_size + self.hidden_size

    def total_params(self) -> int:
        return (self.embedding_params() + self.head_params() + self.norm_params()
                + self.num_hidden_layers * self.layer_linear_params())

    def module_names(self) -> tuple[str, ...]:
        return DECODER_LINEAR + OTHER_TARGETS


def from_config(config: dict[str, Any], name: str = "", source: str = "config.json") -> Architecture:
    """An Architecture from a transformers config.json (text models; Gemma 3's text_config is read)."""
    cfg = config.get("text_config") or config
    missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "vocab_size") if not isinstance(cfg.get(k), int)]
    if missing:
        raise ValueError(f"{source}: missing {', '.join(missing)} (not a decoder-only transformers config)")
    model_type = str(config.get("model_type") or cfg.get("model_type") or "")
    return Architecture(
        name=name or str(config.get("_name_or_path") or model_type or "model"),
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        vocab_size=cfg["vocab_size"], head_dim=cfg.get("head_dim"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        attention_bias=model_type.startswith("qwen2") or bool(cfg.get("attention_bias", False)),
        norms_per_layer=4 if model_type.startswith(("gemma2", "gemma3")) else 2,
        source=source,
    )


def _arch(name, h, i, layers, heads, kv, vocab, **kw) -> Architecture:
    return Architecture(name, h, i, layers, heads, kv, vocab, **kw)


# Values from the models' published config.json files.
BUILTIN: dict[str, Architecture] = {a.name: a for a in (
    _arch("Llama-3-8B", 4096, 14336, 32, 32, 8, 128256),
    _arch("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256),
    _arch("Llama-3.1-70B", 8192, 28672, 80, 64, 8, 128256),
    _arch("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, tie_word_embeddings=True),
    _arch("Llama-3.2-3B", 3072, 8192, 28, 24, 8, 128256, tie_word_embeddings=True),
    _arch("Mistral-7B", 4096, 14336, 32, 32, 8, 32768),
    _arch("Gemma-2-2B", 2304, 9216, 26, 8, 4, 256000, head_dim=256, tie_word_embeddings=True, norms_per_layer=4),
    _arch("Gemma-2-9B", 3584, 14336, 42, 16, 8, 256000, head_dim=256, tie_word_embeddings=True, norms_per_layer=4),
    _arch("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, tie_word_embeddings=True, attention_bias=True),
    _arch("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, attention_bias=True),
    _arch("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, tie_word_embeddings=True),
    _arch("SmolLM2-360M", 960, 2560, 32, 15, 5, 49152, tie_word_embeddings=True),
    _arch("SmolLM2-1.7B", 2048, 8192, 24, 32, 32, 49152, tie_word_embeddings=True),
)}

# Hub ids (org/ prefix and -Instruct/-it suffixes ignored) and packaged names -> table entries.
_ALIASES = [
    (r"(meta-)?llama-3\.1-8b", "Llama-3.1-8B"),
    (r"(meta-)?llama-3-8b", "Llama-3-8B"),
    (r"(meta-)?llama-3(\.1|\.3)?-70b", "Llama-3.1-70B"),
    (r"llama-3\.2-1b", "Llama-3.2-1B"),
    (r"llama-3\.2-3b", "Llama-3.2-3B"),
    (r"mistral-7b(-v0\.\d)?", "Mistral-7B"),
    (r"gemma-2-2b", "Gemma-2-2B"),
    (r"gemma-2-9b", "Gemma-2-9B"),
    (r"qwen2\.5-0\.5b", "Qwen2.5-0.5B"),
    (r"qwen2\.5-7b", "Qwen2.5-7B"),
    (r"smollm2-135m", "SmolLM2-135M"),
    (r"smollm2-360m", "SmolLM2-360M"),
    (r"smollm2-1\.7b", "SmolLM2-1.7B"),
]


def lookup(model_id: str | None) -> Architecture | None:
    """The built-in entry for a hub id or packaged name, e.g. meta-llama/Meta-Llama-3-8B-Instruct."""
    if not model_id:
        return None
    base = model_id.rsplit("/", 1)[-1].lower()
    base = re.sub(r"-(instruct|it|chat|hf)(-.*)?$", "", base)
    for pattern, name in _ALIASES:
        if re.fullmatch(pattern, base):
            return BUILTIN[name]
    return None


def lora_params(arch: Architecture, targets: list[str] | tuple[str, ...], r: int) -> int:
    """Trainable LoRA parameters: r x (in + out) for every adapted Linear (A is r x in, B is out x r)."""
    shapes = arch.linear_shapes()
    total = 0
    for name in resolve_targets(targets):
        if name in shapes:
            a, b = shapes[name]
            total += arch.num_hidden_layers * r * (a + b)
        elif name == "lm_head":
            total += r * (arch.hidden_size + arch.vocab_size)
        elif name == "embed_tokens":  # peft's LoRA embedding: A is r x vocab, B is hidden x r
            total += r * (arch.vocab_size + arch.hidden_size)
    return total


def resolve_targets(targets: list[str] | tuple[str, ...]) -> list[str]:
    """Target names as peft matches them (a name matches a module whose path ends with it)."""
    if list(targets) == ["all-linear"]:
        return list(DECODER_LINEAR)
    return [t.rsplit(".", 1)[-1] for t in targets]


def unknown_targets(arch: Architecture, targets: list[str] | tuple[str, ...]) -> list[str]:
    if list(targets) == ["all-linear"]:
        return []
    known = set(arch.module_names())
    return [t for t in targets if t.rsplit(".", 1)[-1] not in known]
