"""Several LoRA adapters of one base model in one server (adapter-only blue/green).

The base weights load once; each ModelVersion's adapter is added with peft's `load_adapter` under an internal
name, and every forward pass names the adapter of each row (`adapter_names=`, peft's mixed-batch LoRA), so
requests for different adapters share the continuous batch. Adapters are never merged into the base here
(merging bakes in one adapter).

`AdapterSet` holds the registry and the *default* adapter (what a request that names none gets). Switching the
default is one attribute write: a request resolves its adapter once, at admission, so in-flight requests
finish on the adapter they started with and new ones get the new default.
`--adapters-file` (a ConfigMap-mounted `adapters.json`, `{"default": "NAME"}`) is polled by `watch_file`."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors

log = logging.getLogger("tuneops.serve")

BASE = "__base__"  # peft's name for "no adapter" in adapter_names; also selectable by requests
# What clients send when they mean "whatever this server serves": TGI's "tgi", huggingface_hub's "dummy".
DEFAULT_ALIASES = {None, "", "tgi", "dummy"}


@dataclass(frozen=True)
class AdapterInfo:
    name: str           # what requests select (adapter_id / OpenAI `model`)
    version: str        # NAME@VERSION of the ModelVersion
    sha256: str | None  # of adapter_model.safetensors
    directory: Path
    peft_name: str      # the key inside the peft model (ModuleDict keys cannot hold '.')


def _config_error(message: str) -> Exception:
    from .loader import VersionNotFound

    return VersionNotFound(message)


def file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class AdapterSet:
    adapters: dict[str, AdapterInfo]
    default: str
    served_name: str  # the model id /info reports; also means "the default" on the OpenAI routes
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, requested: str | None, *, field_name: str) -> AdapterInfo | None:
        """The adapter a request gets (None = the base model). Unknown names are the caller's error."""
        if requested in DEFAULT_ALIASES or requested == self.served_name:
            requested = self.default
        if requested == BASE:
            return None
        info = self.adapters.get(requested)  # type: ignore[arg-type]
        if info is None:
            known = ", ".join(sorted(self.adapters)) + f", {BASE}"
            raise errors.ServeError(404 if field_name == "model" else 422,
                                    "not_found" if field_name == "model" else "validation",
                                    f"`{field_name}`: unknown adapter {requested!r}; loaded: {known}")
        return info

    def set_default(self, name: str) -> str:
        """Make `name` the default; returns the previous one. Raises 422 naming the loaded adapters."""
        if name != BASE and name not in self.adapters:
            raise errors.validation(f"`adapter`: unknown adapter {name!r}; loaded: "
                                    + ", ".join(sorted(self.adapters)) + f", {BASE}")
        with self._lock:
            previous, self.default = self.default, name
        if previous != name:
            log.info("default adapter switched", extra={"previous": previous, "default": name})
        return previous

    def describe(self) -> dict[str, Any]:
        return {"default": self.default, "adapters": [
            {"name": a.name, "version": a.version, "sha256": a.sha256, "default": a.name == self.default}
            for a in self.adapters.values()]}


def parse_adapter_args(values: list[str]) -> list[tuple[str, str]]:
    """`--adapter NAME=REF` values -> [(name, ref)]; a clear error naming the bad value."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or not name or not ref:
            raise ValueError(f"--adapter {value!r}: expected NAME=NAME@VERSION|PATH")
        if name == BASE or any(n == name for n, _ in out):
            raise ValueError(f"--adapter {value!r}: adapter name {name!r} is reserved or used twice")
        out.append((name, ref))
    return out


def load_adapter_set(primary: tuple[str | None, str], extra: list[tuple[str, str]], *, default: str | None = None,
                     home: Path | str | None = None, dtype: Any = None) -> Any:
    """Load the base model once and every adapter onto it. Refuses, naming the versions, adapters with a
    different base model or versions that only have merged weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from tuneops.runtime.models import load_model, load_tokenizer, prepare_tokenizer

    from .loader import MODELVERSION_FILE, LoadedModel, read_model_version, resolve_version

    versions = []
    for name, ref in [primary, *extra]:
        directory = resolve_version(ref, home=home)
        if not (directory / MODELVERSION_FILE).is_file():
            raise _config_error(f"adapter {name} ({ref}): {directory} has no {MODELVERSION_FILE}; adapter serving "
                                "needs registry versions (base model + adapter/)")
        mv = read_model_version(directory)
        version_id = f"{mv.spec.model}@{mv.spec.version}"
        name = name or version_id  # --version's adapter is called NAME@VERSION unless --adapter-name says
        if not (directory / "adapter").is_dir():
            raise _config_error(f"adapter {name} ({version_id}): merged-only version (no adapter/); "
                                "it cannot share a base model with other adapters")
        versions.append((name, version_id, directory, mv))
    names = [v[0] for v in versions]
    if len(set(names)) != len(names) or BASE in names:
        raise _config_error(f"adapter names must be unique and not {BASE}: {', '.join(names)}")
    first_name, first_id, _, first_mv = versions[0]
    first_base = first_mv.spec.base_model.model_dump(mode="json")
    for name, version_id, _, mv in versions[1:]:
        base = mv.spec.base_model.model_dump(mode="json")
        if base != first_base:
            raise _config_error(f"adapter {name} ({version_id}) has base model {base['source']} but "
                                f"{first_name} ({first_id}) has {first_base['source']}: adapters must share "
                                "the base model (serve them as separate deployments)")
    dtype = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    base_spec = first_mv.spec.base_model
    log.info("loading base %s once for %d adapters", base_spec.family, len(versions))
    model: Any = load_model(base_spec, dtype=dtype, home=home)
    infos: dict[str, AdapterInfo] = {}
    for i, (name, version_id, directory, _) in enumerate(versions):
        peft_name = f"adapter{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, directory / "adapter", adapter_name=peft_name)
        else:
            model.load_adapter(directory / "adapter", adapter_name=peft_name)
        infos[name] = AdapterInfo(name, version_id, file_sha256(directory / "adapter" / "adapter_model.safetensors"),
                                  directory, peft_name)
    adapter_dir = versions[0][2] / "adapter"
    has_tokenizer = any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir) if has_tokenizer else load_tokenizer(base_spec, home=home)
    tokenizer = prepare_tokenizer(tokenizer, base_spec.family)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    chosen = default or first_name
    if chosen not in infos and chosen != BASE:
        raise _config_error(f"--default-adapter {chosen}: not one of {', '.join(infos)}")
    served = f"{first_mv.spec.model}"
    loaded = LoadedModel(model, tokenizer, served, base_spec.family, versions[0][2])
    loaded.adapters = AdapterSet(infos, chosen, served)
    return loaded


def read_default(path: Path) -> str | None:
    """`{"default": "NAME"}` from an adapters file; None (and a warning) if unreadable or invalid."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("adapters file %s: cannot read: %s", path, exc)
        return None
    value = doc.get("default") if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        log.warning("adapters file %s: expected {\"default\": \"NAME\"}", path)
        return None
    return value


def watch_file(adapters: AdapterSet, path: Path, stop: threading.Event, interval: float = 1.0) -> None:
    """Apply the file's default whenever it changes (ConfigMap volumes swap a symlink, so read, don't stat)."""
    applied: str | None = None
    while True:
        wanted = read_default(path) if path.exists() else None
        if wanted is not None and wanted != applied:
            try:
                adapters.set_default(wanted)
                applied = wanted
            except errors.ServeError as exc:
                log.warning("adapters file %s: %s", path, exc.message)
                applied = wanted  # do not log it every second
        if stop.wait(interval):
            return
