"""Export: safetensors only, atomic folders, and a merged model that decodes exactly like base + adapter."""

from __future__ import annotations

import shutil

import pytest
import torch

from tuneops.runtime.evaluate import Sample, generate
from tuneops.runtime.export import (
    PickleFormatError, atomic_dir, directory_digest, load_adapted, load_merged, merge_loaded, refuse_pickles,
    save_adapter,
)

from . import tiny

PROMPTS = [f"Problem with the {topic}: {phrase} #{i}" for i, ((_, topic), (_, phrase)) in
           enumerate((t, s) for t in tiny.TOPICS for s in tiny.SEVERITIES)][:18] + ["hello", "refund invoice api"]


def _samples() -> list[Sample]:
    return [Sample(prompt=[{"role": "system", "content": tiny.SYSTEM}, {"role": "user", "content": p}],
                   reference="") for p in PROMPTS]


def greedy_token_ids(model, tokenizer, samples, max_new_tokens=16) -> list[list[int]]:
    """Token ids (not text) so equality is exact, one prompt at a time so padding plays no part."""
    out = []
    for s in samples:
        text = tokenizer.apply_chat_template(s.prompt, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(ids[0, enc["input_ids"].shape[1]:].tolist())
    return out


def test_merged_model_generates_the_same_greedy_tokens(tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_dir)
    samples = _samples()
    assert len(samples) == 20
    adapted = load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir).eval()
    expected = greedy_token_ids(adapted, tokenizer, samples)
    with adapted.disable_adapter():
        base_only = greedy_token_ids(adapted, tokenizer, samples)
    assert expected != base_only, "the adapter must change the output, or this test proves nothing"

    merged_dir = merge_loaded(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir,
                              tmp_path / "merged", dtype="float32", tokenizer=tokenizer)
    files = {p.name for p in merged_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= files
    assert not any(n.endswith((".bin", ".pt")) for n in files)
    merged = load_merged(merged_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert greedy_token_ids(merged, AutoTokenizer.from_pretrained(merged_dir), samples) == expected
    # and batched left-padded decoding agrees with it too
    assert generate(merged, tokenizer, samples, max_new_tokens=16).texts == \
        generate(adapted, tokenizer, samples, max_new_tokens=16).texts


def test_merge_with_dtype_cast(tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge_loaded(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir, tmp_path / "bf16",
                       dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype: must be one of bfloat16, float16, float32"):
        merge_loaded(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir, tmp_path / "x",
                     dtype="int8")


def test_pickle_adapters_are_refused(tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_adapter_dir, pickled)
    (pickled / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, pickled / "adapter_model.bin")
    with pytest.raises(PickleFormatError, match=r"pickled: adapter contains pickle-format files \(adapter_model.bin\)"):
        load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), pickled)
    with pytest.raises(PickleFormatError, match="training_args.pt"):
        weird = tmp_path / "merged"
        weird.mkdir()
        (weird / "training_args.pt").write_bytes(b"\x80")
        load_merged(weird)
    with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
        load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tmp_path)


def test_save_adapter_is_safetensors_and_atomic(tiny_base_dir, tiny_adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapted = load_adapted(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir)
    out = save_adapter(adapted, tmp_path / "adapter", AutoTokenizer.from_pretrained(tiny_base_dir))
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    refuse_pickles(out, what="adapter")
    with pytest.raises(FileExistsError, match="already exists"):
        save_adapter(adapted, out)
    # a crash half-way leaves no folder that looks complete
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "crashed") as tmp:
            (tmp / "partial.safetensors").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not (tmp_path / "crashed").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_directory_digest_tracks_content_and_names(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "w.safetensors").write_bytes(b"123")
    (a / "sub").mkdir()
    (a / "sub" / "c.json").write_text("{}")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert directory_digest(a) == directory_digest(b)
    assert len(directory_digest(a)) == 64
    (b / "w.safetensors").write_bytes(b"124")
    assert directory_digest(a) != directory_digest(b)
    (b / "w.safetensors").write_bytes(b"123")
    (b / "sub" / "c.json").rename(b / "sub" / "d.json")
    assert directory_digest(a) != directory_digest(b)
