"""Export trained weights: the adapter, and the adapter merged into its base — safetensors only.

Pickle formats (`.bin`, `.pt`, ...) can execute code when loaded, so they are refused both when reading an
adapter and when writing an export. Every export is written into a temporary sibling folder and renamed into
place, so a crash never leaves a half-written model that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneops.api.model_source import BaseModelSpec
from tuneops.atomic import write_text_atomic

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
DTYPES = ("bfloat16", "float16", "float32")


class PickleFormatError(ValueError):
    """Weights in a pickle-based format were offered or produced."""


# ---------------------------------------------------------------------------------------------------------
# Small file helpers shared by evaluate/registry/report.

def atomic_write_text(path: Path, text: str) -> Path:
    return write_text_atomic(path, text)


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(out_dir: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `out_dir`; on success it becomes `out_dir` in one rename."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not replace:
        raise FileExistsError(f"{out_dir}: already exists (exports are immutable)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def pickle_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(directory: Path, *, what: str) -> None:
    """Raise PickleFormatError naming every pickle-format weight file in `directory`."""
    found = pickle_files(directory)
    if found:
        names = ", ".join(str(p.relative_to(directory)) for p in found)
        raise PickleFormatError(
            f"{directory}: {what} contains pickle-format files ({names}); only safetensors are accepted "
            "(re-save with save_pretrained, which writes .safetensors)")


def directory_digest(directory: Path) -> str:
    """sha256 (64 hex) of the manifest '<sha256>  <relative path>\\n' over every file, sorted by path:
    stable across copies and machines, and changes when any file's content or name changes."""
    directory = Path(directory)
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {path.relative_to(directory).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def copy_artifact(src: Path, dst: Path) -> Path:
    """Copy an exported folder atomically (used to place artifacts in the local registry)."""
    refuse_pickles(src, what="artifact")
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return dst


# ---------------------------------------------------------------------------------------------------------
# Adapter and merged exports.

def _check_saved(directory: Path, what: str) -> None:
    refuse_pickles(directory, what=what)
    if not any(directory.glob("*.safetensors")):
        raise PickleFormatError(f"{directory}: {what} was saved without any .safetensors weights")


def save_adapter(model, out_dir: Path, tokenizer=None, *, replace: bool = False) -> Path:
    """Save a peft model's adapter (safetensors) and the tokenizer next to it."""
    with atomic_dir(out_dir, replace=replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _check_saved(tmp, "adapter")
    return Path(out_dir)


def load_adapted(model, adapter_dir: Path):
    """Wrap a loaded base model with the adapter in `adapter_dir` (refusing pickles before reading anything)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: not a peft adapter (adapter_config.json is missing)")
    refuse_pickles(adapter_dir, what="adapter")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise PickleFormatError(f"{adapter_dir}: adapter_model.safetensors is missing")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def merge_loaded(model, adapter_dir: Path, out_dir: Path, *, dtype: str = "float32", tokenizer=None,
                 replace: bool = False) -> Path:
    """Merge `adapter_dir` into the already-loaded base `model` and save the merged model.

    The merge happens in the base's loaded precision (load it in float32 for an exact merge) and the
    result is cast to `dtype` only afterwards, so rounding happens once.
    """
    adapted = load_adapted(model, adapter_dir)
    merged = adapted.merge_and_unload()
    merged = merged.to(torch_dtype(dtype))
    merged.config.dtype = dtype
    with atomic_dir(out_dir, replace=replace) as tmp:
        merged.save_pretrained(tmp)
        if merged.generation_config is not None:
            merged.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _check_saved(tmp, "merged model")
    return Path(out_dir)


def merge_adapter(base: BaseModelSpec, adapter_dir: Path, out_dir: Path, dtype: str = "bfloat16", *,
                  home: Path | str | None = None) -> Path:
    """Contract entry point: load the base (float32, CPU), merge the adapter, save merged safetensors."""
    import torch

    from tuneops.runtime.models import load_model, load_tokenizer

    torch_dtype(dtype)  # validate before the expensive load
    model = load_model(base, dtype=torch.float32, home=home)
    adapter_dir = Path(adapter_dir)
    tokenizer = _tokenizer_for(adapter_dir) or load_tokenizer(base, home=home)
    return merge_loaded(model, adapter_dir, out_dir, dtype=dtype, tokenizer=tokenizer)


def _tokenizer_for(adapter_dir: Path):
    """The tokenizer saved with the adapter (training saves it there), if any."""
    if not any((adapter_dir / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(adapter_dir)


def load_merged(merged_dir: Path, *, dtype: str | None = None):
    """Load a merged export, refusing pickle weights."""
    from transformers import AutoModelForCausalLM

    merged_dir = Path(merged_dir)
    refuse_pickles(merged_dir, what="merged model")
    kwargs = {"dtype": torch_dtype(dtype)} if dtype else {}
    return AutoModelForCausalLM.from_pretrained(merged_dir, **kwargs)
