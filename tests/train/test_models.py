"""The family registry against tiny random models of each family, and the model sources."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.support.tiny_models import FAMILY_SPECS, tiny_model_dir, tiny_tokenizer
from tuneops.api.finetunejob import QuantizationSpec
from tuneops.api.model_source import BaseModelSpec
from tuneops.runtime import models
from tuneops.runtime.models import (
    FAMILIES, ModelSourceError, QuantizationUnavailable, load_model, load_tokenizer, lora_target_modules,
    materialise_gguf, prepare_tokenizer,
)

CHAT = [
    {"role": "system", "content": "You triage tickets."},
    {"role": "user", "content": "login is broken"},
    {"role": "assistant", "content": '{ "category" : "login" }'},
]


def path_spec(family: str, directory) -> BaseModelSpec:
    return BaseModelSpec.model_validate({"family": family, "source": {"path": str(directory)}})


def test_every_api_family_is_registered():
    from tuneops.api.model_source import Family

    assert set(FAMILIES) == set(Family.__args__) == set(FAMILY_SPECS)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_target_modules_exist_and_train(family, tmp_path):
    from peft import LoraConfig, get_peft_model

    directory = tiny_model_dir(family, tmp_path / family)
    model = load_model(path_spec(family, directory))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules(family)))
    adapted = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # Only the adapters train, and a backward pass reaches them.
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    peft_model(input_ids=ids, labels=ids).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chat_template_renders_and_tokens_are_fixed_up(family):
    tokenizer = prepare_tokenizer(tiny_tokenizer(family), family)
    info = FAMILIES[family]
    full = tokenizer.apply_chat_template(CHAT, tokenize=False)
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert "You triage tickets." in full and "login is broken" in full and '"category"' in full
    # Completion-only loss relies on the prompt rendering being a prefix of the full conversation.
    assert full.startswith(prompt) and len(full) > len(prompt)
    assert tokenizer.eos_token == info.end_of_turn
    assert tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token
    assert info.end_of_turn in full[len(prompt):] or family == "mistral" and "</s>" in full[len(prompt):]


def test_family_templates_fold_system_where_the_family_has_no_system_role():
    tokenizer = prepare_tokenizer(tiny_tokenizer("gemma2"), "gemma2")
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert "<start_of_turn>system" not in text and "<start_of_turn>user\nYou triage tickets." in text
    assert "<start_of_turn>model\n" in text


def test_explicit_target_modules_win():
    assert lora_target_modules("llama3", ["q_proj"]) == ["q_proj"]
    assert lora_target_modules("llama3", ["all-linear"]) == "all-linear"


def test_family_mismatch_is_a_clear_error(tmp_path):
    directory = tiny_model_dir("qwen2", tmp_path / "q")
    with pytest.raises(ModelSourceError, match=r"baseModel.family: gemma2 expects model_type gemma2.*'qwen2'"):
        load_model(path_spec("gemma2", directory))


def test_missing_sources_name_the_field(tmp_path, monkeypatch):
    with pytest.raises(ModelSourceError, match="baseModel.source.path: .* is not a directory"):
        load_tokenizer(path_spec("llama3", tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json"):
        load_tokenizer(path_spec("llama3", tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = BaseModelSpec.model_validate({"family": "llama3", "source": {"hf": "meta-llama/Llama-3.2-1B-Instruct"}})
    with pytest.raises(ModelSourceError, match="baseModel.source.hf: .* not in the local Hugging Face cache"):
        load_tokenizer(spec)


def test_qlora_loads_4bit_on_this_machine(tmp_path):
    directory = tiny_model_dir("llama3", tmp_path / "l")
    quant = QuantizationSpec(type="nf4", compute_dtype="float32")
    model = load_model(path_spec("llama3", directory), quantization=quant)
    import bitsandbytes as bnb

    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


def test_qlora_without_bitsandbytes_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an image without bitsandbytes sees
    directory = tiny_model_dir("llama3", tmp_path / "l")
    with pytest.raises(QuantizationUnavailable, match="spec.quantization: QLoRA needs bitsandbytes"):
        load_model(path_spec("llama3", directory), quantization=QuantizationSpec())


def test_qlora_on_a_device_bitsandbytes_cannot_use_fails_clearly():
    # A device this machine has no backend for stands in for a CPU/GPU that 4-bit kernels do not support.
    with pytest.raises(QuantizationUnavailable, match="cannot run 4-bit nf4 .* on meta"):
        models.check_4bit_available(QuantizationSpec(), "meta")


def test_broken_gguf_leaves_no_partial_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception):
        materialise_gguf(bad, home=tmp_path / "home")
    assert list((tmp_path / "home" / "models").iterdir()) == []


@pytest.mark.slow
def test_packaged_smollm2_is_materialised_once_and_answers(smollm2_dir):
    from tests.support.smollm2 import shared_home, smollm2_base_spec

    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / models.MATERIALISED_MARKER).is_file()
    assert models.resolve_model_dir(smollm2_base_spec(), home=shared_home()) == smollm2_dir  # reused
    tokenizer = load_tokenizer(smollm2_base_spec(), home=shared_home())
    model = load_model(smollm2_base_spec(), home=shared_home())
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])
