"""The datasets the trainer consumes, and the bridge to the data pipeline (tuneops.runtime.data).

Training uses the conversational *prompt-completion* form: prompt = every turn before the last assistant
turn, completion = that turn. TRL then masks the prompt out of the loss (completion-only loss) with any
chat template, with no need for `{% generation %}` markers.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.api.dataset import DatasetSpec

from .atomic import write_bytes_atomic, write_json_atomic


class TrainingDataError(ValueError):
    """A dataset file the trainer cannot use; the message names the file and line."""


@dataclass
class PreparedData:
    """What train() needs from a prepared dataset (tuneops.runtime.data.PreparedDataset has the same fields)."""

    out_dir: Path
    train_path: Path
    validation_path: Path
    test_path: Path
    version: str
    manifest: dict[str, Any] = field(default_factory=dict)


def prepare_training_data(spec: DatasetSpec, *, out_dir: Path, base_dir: Path | None = None, tokenizer: Any = None,
                          max_seq_length: int | None = None) -> Any:
    """tuneops.runtime.data.prepare_dataset when it is available; until then a minimal reader of canonical
    openai-messages JSONL (no cleaning rules applied) so training can be developed and tested."""
    try:
        from tuneops.runtime.data import prepare_dataset
    except ImportError:
        return _read_canonical_jsonl(spec, out_dir=Path(out_dir), base_dir=base_dir)
    return prepare_dataset(spec, out_dir=Path(out_dir), base_dir=base_dir, tokenizer=tokenizer,
                           max_seq_length=max_seq_length)


def _read_canonical_jsonl(spec: DatasetSpec, *, out_dir: Path, base_dir: Path | None) -> PreparedData:
    if spec.format != "openai-messages" or "://" in spec.source:
        raise TrainingDataError(
            f"spec.dataset: format {spec.format} from {spec.source} needs tuneops.runtime.data, which is not installed")
    source = Path(spec.source)
    if not source.is_absolute() and base_dir is not None:
        source = Path(base_dir) / source
    rows = load_rows(source)
    rng = random.Random(spec.split.seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_val = int(round(len(rows) * spec.split.validation))
    if spec.split.max_validation_samples:
        n_val = min(n_val, spec.split.max_validation_samples)
    n_test = int(round(len(rows) * spec.split.test))
    splits = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    if spec.max_samples:
        splits["train"] = splits["train"][:spec.max_samples]
    digest = hashlib.sha256()
    for name in ("train", "validation", "test"):
        text = "".join(json.dumps(rows[i], sort_keys=True) + "\n" for i in splits[name])
        digest.update(name.encode() + b"\0" + text.encode())
        write_bytes_atomic(out_dir / f"{name}.jsonl", text.encode())
    version = f"sha256:{digest.hexdigest()}"
    manifest = {"version": version, "counts": {k: len(v) for k, v in splits.items()}, "sources": [str(source)],
                "note": "interim reader: tuneops.runtime.data not installed, cleaning rules not applied"}
    write_json_atomic(out_dir / "manifest.json", manifest)
    return PreparedData(out_dir, out_dir / "train.jsonl", out_dir / "validation.jsonl", out_dir / "test.jsonl",
                        version, manifest)


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                raise TrainingDataError(f"{path}:{number}: expected {{\"messages\": [...]}}")
            rows.append(row)
    return rows


def to_prompt_completion(row: dict[str, Any], *, where: str = "") -> dict[str, list[dict[str, str]]]:
    messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if not messages or messages[-1]["role"] != "assistant":
        raise TrainingDataError(f"{where}: messages: the last turn must be the assistant's (it is the completion)")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def load_split(path: Path | None):
    """A datasets.Dataset of prompt/completion rows, or None for a missing or empty split."""
    from datasets import Dataset

    if path is None or not Path(path).is_file():
        return None
    rows = [to_prompt_completion(r, where=f"{path}:{i}") for i, r in enumerate(load_rows(Path(path)), start=1)]
    return Dataset.from_list(rows) if rows else None
