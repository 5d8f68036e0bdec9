"""The pure estimator (tuneops.planning) against the real architectures: parameter and LoRA counts equal
what transformers and peft build (on the meta device: no weights), and the memory formulas behave."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tuneops.planning import BUILTIN, estimate, find_gpu, flops_per_token, from_config, lookup, lora_params
from tuneops.planning.architectures import DECODER_LINEAR
from tuneops.planning.memory import GIB, Setup, weight_bytes

# Published parameter counts (model cards / safetensors index totals).
PUBLISHED = {"Llama-3-8B": 8_030_261_248, "Mistral-7B": 7_248_023_552, "Qwen2.5-0.5B": 494_032_768,
             "SmolLM2-135M": 134_515_008, "Gemma-2-2B": 2_614_341_888, "Llama-3.2-1B": 1_235_814_400}


@pytest.mark.parametrize("name", PUBLISHED)
def test_builtin_parameter_counts_match_the_published_ones(name):
    assert BUILTIN[name].total_params() == PUBLISHED[name]


@pytest.mark.parametrize("model_id, name", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B"), ("meta-llama/Llama-3.1-8B", "Llama-3.1-8B"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral-7B"), ("google/gemma-2-9b-it", "Gemma-2-9B"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B"), ("smollm2-135m-instruct", "SmolLM2-135M"),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B"), ("acme/unknown-13b", None)])
def test_lookup_by_hub_id_or_packaged_name(model_id, name):
    arch = lookup(model_id)
    assert (arch.name if arch else None) == name


def _meta_model(config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _peft_trainable(model, targets, r):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"))
    return peft_model.get_nb_trainable_parameters()[0]


def test_smollm2_config_matches_the_table_and_peft_counts_exactly(smollm2_dir):
    """The real SmolLM2-135M config: table == config.json; LoRA count == peft's for the default targets."""
    from transformers import AutoConfig

    config = json.loads((smollm2_dir / "config.json").read_text())
    arch = from_config(config, name="SmolLM2-135M")
    table = BUILTIN["SmolLM2-135M"]
    assert (arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers, arch.num_attention_heads,
            arch.num_key_value_heads, arch.vocab_size, arch.tie_word_embeddings) == (
        table.hidden_size, table.intermediate_size, table.num_hidden_layers, table.num_attention_heads,
        table.num_key_value_heads, table.vocab_size, table.tie_word_embeddings)
    model = _meta_model(AutoConfig.from_pretrained(smollm2_dir))
    assert arch.total_params() == sum(p.numel() for p in model.parameters())
    assert lora_params(arch, list(DECODER_LINEAR), 8) == _peft_trainable(model, list(DECODER_LINEAR), 8) == 2_442_240


@pytest.mark.parametrize("family, targets, r", [
    ("qwen2", ["q_proj", "v_proj"], 16),             # q/k/v biases
    ("gemma2", ["all-linear"], 4),                    # head_dim != hidden/heads, four norms per layer
    ("mistral", ["o_proj", "down_proj", "gate_proj"], 32),
    ("llama3", ["self_attn.k_proj", "mlp.up_proj"], 8),  # dotted suffixes as peft matches them
])
def test_counts_equal_transformers_and_peft_on_other_families(family, targets, r):
    import transformers

    from tests.support.tiny_models import FAMILY_SPECS

    spec = FAMILY_SPECS[family]
    extra = {"head_dim": 24} if family == "gemma2" else {}  # q_dim 144 != hidden 96
    config = getattr(transformers, spec["config"])(
        vocab_size=320, hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, tie_word_embeddings=family != "mistral", **extra)
    arch = from_config(config.to_dict())
    model = _meta_model(config)
    assert arch.total_params() == sum(p.numel() for p in model.parameters())
    peft_targets = "all-linear" if targets == ["all-linear"] else targets
    assert lora_params(arch, targets, r) == _peft_trainable(model, peft_targets, r)


LLAMA8 = BUILTIN["Llama-3-8B"]


def test_qlora_weights_are_half_a_byte_plus_constants():
    arch = LLAMA8
    linear = arch.num_hidden_layers * arch.layer_linear_params()
    rest = arch.total_params() - linear
    dq = weight_bytes(arch, Setup(method="qlora", double_quant=True))
    plain = weight_bytes(arch, Setup(method="qlora", double_quant=False))
    # NF4 + one fp32 absmax per 64 values = 0.5625 B/param; double quantisation ~ 0.5159 B/param.
    assert (plain - rest * 4) / linear == pytest.approx(0.5625)
    assert (dq - rest * 4) / linear == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))
    assert dq < 0.5 * weight_bytes(arch, Setup(method="lora"))  # vs bf16


def test_zero3_divides_weights_gradients_and_optimizer_by_world_size():
    base = Setup(method="full", strategy="deepspeed", zero_stage=3, batch_size=1, seq_len=512)
    one, four = estimate(LLAMA8, replace(base, processes=1)), estimate(LLAMA8, replace(base, processes=4))
    assert four.optimizer_gib == pytest.approx(one.optimizer_gib / 4, rel=0.01)
    assert four.gradients_gib == pytest.approx(one.gradients_gib / 4, rel=0.01)
    assert four.weights_gib < one.weights_gib / 3  # shard + two gathered layers
    assert four.activations_gib == one.activations_gib  # activations are per process, never sharded
    # ZeRO-2 shards optimizer states and gradients only; the full bf16 weights stay on every GPU.
    zero2 = estimate(LLAMA8, replace(base, zero_stage=2, processes=4))
    assert zero2.weights_gib == pytest.approx(LLAMA8.total_params() * 2 / GIB, rel=0.01)
    # DeepSpeed full fine-tuning: fp32 master + m + v = 12 bytes per parameter before sharding.
    assert one.optimizer_gib == pytest.approx(LLAMA8.total_params() * 12 / GIB, rel=0.01)
    offload = estimate(LLAMA8, replace(base, processes=4, offload_optimizer=True, offload_params=True))
    assert offload.optimizer_gib == 0 and offload.cpu_offload_gib > 20


def test_gradient_checkpointing_and_dropout_change_activations_only():
    s = Setup(method="lora", batch_size=4, seq_len=2048, lora_dropout=0.0)
    full, ckpt = estimate(LLAMA8, s), estimate(LLAMA8, replace(s, gradient_checkpointing=True))
    assert ckpt.activations_gib < full.activations_gib / 5
    assert ckpt.weights_gib == full.weights_gib and ckpt.logits_gib == full.logits_gib
    assert estimate(LLAMA8, replace(s, lora_dropout=0.1)).activations_gib > full.activations_gib
    # TRL's fused head: two bf16 [4096 x 32768] tiles, however many tokens and however large the vocabulary.
    assert full.logits_gib == pytest.approx(2 * 4096 * 32768 * 2 / GIB, rel=0.01)


def test_cpu_head_materialises_labelled_logits_up_to_its_budget():
    smol = BUILTIN["SmolLM2-135M"]
    s = Setup(method="lora", device="cpu", batch_size=4, seq_len=100, label_tokens=80)
    assert estimate(smol, s).logits_gib == pytest.approx(12 * 80 * 49152 / GIB, abs=0.01)
    assert estimate(smol, replace(s, label_tokens=None)).logits_gib == pytest.approx(12 * 400 * 49152 / GIB, abs=0.01)
    # over the 1 GiB budget the tiled head runs (fp32 tiles on CPU)
    big = replace(s, seq_len=1000, label_tokens=None)
    assert estimate(smol, big).logits_gib == pytest.approx(2 * 4000 * 32768 * 4 / GIB, abs=0.01)


def test_cpu_estimates_are_fp32_without_cuda_overhead():
    s = Setup(method="lora", device="cpu", batch_size=1, seq_len=128)
    cpu, gpu = estimate(LLAMA8, s), estimate(LLAMA8, replace(s, device="cuda"))
    assert cpu.weights_gib == pytest.approx(2 * gpu.weights_gib, rel=0.01)
    assert cpu.overhead_gib == 0 and gpu.overhead_gib >= 0.75


def test_flops_per_token_formula():
    s = Setup(method="full", seq_len=1)
    n = LLAMA8.total_params()
    attention = 6 * LLAMA8.num_hidden_layers * LLAMA8.q_dim
    assert flops_per_token(LLAMA8, s) == 6 * n + attention
    lora = replace(s, method="lora", lora_r=16)
    assert flops_per_token(LLAMA8, lora) == 4 * n + 6 * lora_params(LLAMA8, DECODER_LINEAR, 16) + attention
    assert flops_per_token(LLAMA8, replace(lora, gradient_checkpointing=True)) == flops_per_token(LLAMA8, lora) + 2 * n


@pytest.mark.parametrize("label, name", [("NVIDIA-A10G", "A10G-24G"), ("Tesla-T4", "T4-16G"),
                                         ("NVIDIA-A100-SXM4-80GB", "A100-80G"), ("H100", "H100-80G"),
                                         ("nvidia-l40s", "L40S-48G"), ("NVIDIA-H200", "H200-141G"),
                                         ("A100", None), ("NVIDIA-B200", None)])
def test_gpu_table_lookup(label, name):
    gpu = find_gpu(label)
    assert (gpu.name if gpu else None) == name


def test_planning_tables_agree_with_the_runtime_family_registry():
    """tuneops.planning may not import the runtime: its copies of the family facts must match it."""
    from tuneops.planning.memory import EAGER_ATTENTION_FAMILIES
    from tuneops.runtime.models import FAMILIES

    assert EAGER_ATTENTION_FAMILIES == {n for n, f in FAMILIES.items() if f.attn_implementation == "eager"}
    for name, info in FAMILIES.items():
        if not isinstance(info.target_modules, str):
            assert tuple(info.target_modules) == DECODER_LINEAR, name


def test_eager_attention_is_quadratic_in_the_flat_padding_free_row():
    gemma = BUILTIN["Gemma-2-2B"]
    s = Setup(method="lora", batch_size=4, seq_len=1024, eager_attention=True)
    flat, packed = estimate(gemma, s), estimate(gemma, replace(s, packing=True))
    sdpa = estimate(gemma, replace(s, eager_attention=False))
    # padding-free: one row of 4096 tokens -> 4x the scores of 4 packed rows of 1024
    extra_flat, extra_packed = flat.activations_gib - sdpa.activations_gib, packed.activations_gib - sdpa.activations_gib
    assert extra_flat == pytest.approx(4 * extra_packed, rel=0.02)
