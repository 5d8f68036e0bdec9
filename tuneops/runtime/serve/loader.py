"""Find and load what `tuneops serve --version` names.

`--version` is `NAME@VERSION`, `NAME@latest` (both in `TUNEOPS_HOME/registry/<name>/<version>/`) or a PATH:
- a directory with `config.json` (a merged or plain transformers model);
- a registry version directory: `modelversion.yaml` + `merged/` (preferred) or `adapter/`, where the adapter
  is applied to the base model the ModelVersion names and merged into it for faster inference;
- an fsspec URI (s3://...) of what a training pod published (`job.yaml` names the base model), fetched once
  into the content-addressed cache `TUNEOPS_HOME/cache/artifacts/` (tuneops.runtime.remote_artifacts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("tuneops.serve")

MODELVERSION_FILE = "modelversion.yaml"
PUBLISHED_JOB_FILE = "job.yaml"  # written by the training pod next to adapter/ (tuneops.runtime.train)


class VersionNotFound(ValueError):
    """The --version reference does not resolve to something servable; the message says what is missing."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str          # what /info and the OpenAI routes report
    family: str | None
    directory: Path
    adapters: Any = None   # an `adapters.AdapterSet` when several LoRA adapters share the base (unmerged)


def resolve_version(ref: str, *, home: Path | str | None = None) -> Path:
    """The directory `ref` names (see module doc)."""
    from tuneops.runtime.remote_artifacts import ArtifactNotReady, fetch, is_remote

    if is_remote(ref):
        # What a training pod published (<output>/<ns>/<job>/ with adapter/, merged/, job.yaml, COMPLETE);
        # an adapter/ or merged/ URI means its folder, like the local registry layout.
        root = ref.rstrip("/")
        if root.rsplit("/", 1)[-1] in ("adapter", "merged"):
            root = root.rsplit("/", 1)[0]
        try:
            return fetch(root, home=home)
        except (ArtifactNotReady, FileNotFoundError, ValueError) as exc:
            raise VersionNotFound(f"--version {ref}: {exc}") from exc
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise VersionNotFound(f"--version {ref}: {path} is not a directory")
        return path.resolve()
    if "@" not in ref:
        raise VersionNotFound(f"--version {ref}: no such directory, and not NAME@VERSION or NAME@latest")
    from tuneops.runtime.paths import registry_dir

    name, _, version = ref.partition("@")
    model_dir = registry_dir(home) / name
    if not model_dir.is_dir():
        raise VersionNotFound(f"--version {ref}: model {name!r} is not in the registry ({model_dir})")
    if version == "latest":
        numbers = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if not numbers:
            raise VersionNotFound(f"--version {ref}: {model_dir} has no versions")
        version = str(numbers[-1])
    if not version.isdigit():
        raise VersionNotFound(f"--version {ref}: version must be a number or 'latest', got {version!r}")
    directory = model_dir / str(int(version))
    if not directory.is_dir():
        raise VersionNotFound(f"--version {ref}: {directory} does not exist")
    return directory


def read_model_version(directory: Path) -> Any:
    import yaml

    from tuneops.api import InvalidResource, ModelVersion, parse_resource

    file = directory / MODELVERSION_FILE
    try:
        resource = parse_resource(yaml.safe_load(file.read_text()))
    except InvalidResource as exc:
        raise VersionNotFound(f"{file}: " + "; ".join(str(e) for e in exc.errors)) from exc
    except (OSError, yaml.YAMLError) as exc:
        raise VersionNotFound(f"{file}: cannot read: {exc}") from exc
    if not isinstance(resource, ModelVersion):
        raise VersionNotFound(f"{file}: expected kind ModelVersion, got {resource.kind}")
    return resource


def load(ref: str, *, home: Path | str | None = None, dtype: Any = None) -> LoadedModel:
    """Load the model and tokenizer `ref` names, ready for generation (eval mode, merged adapter)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = resolve_version(ref, home=home)
    version = read_model_version(directory) if (directory / MODELVERSION_FILE).is_file() else None
    base_model = version.spec.base_model if version else _published_base_model(directory)
    family = base_model.family if base_model else None
    model_id = f"{version.spec.model}@{version.spec.version}" if version else directory.name
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)

    weights = next((d for d in (directory, directory / "merged") if (d / "config.json").is_file()), None)
    if weights is not None:
        log.info("loading model from %s", weights)
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(weights)
    elif base_model is not None and (directory / "adapter").is_dir():
        model, tokenizer = _load_adapter(base_model, directory / "adapter", dtype, home)
    else:
        raise VersionNotFound(
            f"{directory}: nothing to serve: expected config.json (a model), merged/config.json, or "
            f"{MODELVERSION_FILE} (or {PUBLISHED_JOB_FILE}) + adapter/")
    if family:
        from tuneops.runtime.models import prepare_tokenizer

        tokenizer = prepare_tokenizer(tokenizer, family)
    if getattr(tokenizer, "chat_template", None) is None:
        log.warning("%s: tokenizer has no chat template; /v1/chat/completions will answer 422", directory)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return LoadedModel(model, tokenizer, model_id, family, directory)


def _published_base_model(directory: Path) -> Any:
    """The base model of a pod-published folder: the FineTuneJob in job.yaml (no ModelVersion there)."""
    file = directory / PUBLISHED_JOB_FILE
    if not file.is_file():
        return None
    import yaml

    from tuneops.api import FineTuneJob, InvalidResource, parse_resource

    try:
        resource = parse_resource(yaml.safe_load(file.read_text()))
    except InvalidResource as exc:
        raise VersionNotFound(f"{file}: " + "; ".join(str(e) for e in exc.errors)) from exc
    if not isinstance(resource, FineTuneJob):
        raise VersionNotFound(f"{file}: expected kind FineTuneJob, got {resource.kind}")
    return resource.spec.base_model


def _load_adapter(base_model: Any, adapter_dir: Path, dtype: Any, home: Path | str | None) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from tuneops.runtime.models import load_model, load_tokenizer

    log.info("loading base %s + adapter %s", base_model.family, adapter_dir)
    base = load_model(base_model, dtype=dtype, home=home)
    # Merging once at load makes every forward pass as cheap as the base model's.
    model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    has_tokenizer = any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir) if has_tokenizer else load_tokenizer(
        base_model, home=home)
    return model, tokenizer
