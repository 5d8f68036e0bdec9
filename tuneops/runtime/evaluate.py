"""Evaluate the base model against the tuned model on the held-out split, then apply the eval gate.

Both models see the same samples, the same prompts (chat template with a generation prompt) and the same
greedy decoding. The base model is the tuned one with its adapter disabled (peft's `disable_adapter()`), so
only one copy of the weights is loaded and nothing else can differ between the two.

- loss / perplexity: mean negative log-likelihood of the reference assistant answer's tokens (prompt tokens
  masked), token-weighted over all samples; perplexity = exp(loss).
- generation metrics: see `tuneops.runtime.metrics`; `tokensPerSecond` and `latencyMs` (per sample, batched)
  are measured around `generate()`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.api.evaluation import EvaluationResult, EvaluationSpec
from tuneops.api.finetunejob import FineTuneJob
from tuneops.runtime.export import atomic_write_json, atomic_write_text, load_adapted
from tuneops.runtime.gate import apply_gate
from tuneops.runtime.metrics import GENERATION_METRICS, check_evaluators, text_metrics

EVALUATION_FILE = "evaluation.json"
SAMPLES_FILE = "samples.jsonl"
IGNORE_INDEX = -100


class EvaluationDataError(ValueError):
    """A held-out row cannot be evaluated; the message names the row."""


@dataclass(frozen=True)
class Sample:
    prompt: list[dict[str, str]]   # the conversation up to (not including) the final assistant answer
    reference: str                 # the final assistant answer


@dataclass
class Generations:
    texts: list[str]
    new_tokens: int
    seconds: float
    token_ids: list[list[int]] = field(default_factory=list)  # generated ids per sample (through eos)


@dataclass
class ModelScores:
    metrics: dict[str, float] = field(default_factory=dict)
    predictions: list[str] = field(default_factory=list)


def to_samples(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[Sample]:
    """Canonical rows ({"messages": [...]}) -> samples; the last message must be the assistant's answer."""
    samples = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise EvaluationDataError(f"held-out row {i}: messages: must be a non-empty list")
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(last.get("content"), str):
            raise EvaluationDataError(f"held-out row {i}: messages[{len(messages) - 1}]: "
                                      "the last message must be an assistant answer with text content")
        if len(messages) < 2:
            raise EvaluationDataError(f"held-out row {i}: messages: needs a prompt before the assistant answer")
        samples.append(Sample(prompt=[dict(m) for m in messages[:-1]], reference=last["content"]))
    return samples


def prompt_text(tokenizer, sample: Sample) -> str:
    return tokenizer.apply_chat_template(sample.prompt, tokenize=False, add_generation_prompt=True)


def _loss_example(tokenizer, sample: Sample, max_length: int) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) with only the answer (and its end-of-turn) as targets; None if nothing fits."""
    prompt = prompt_text(tokenizer, sample)
    full = tokenizer.apply_chat_template(sample.prompt + [{"role": "assistant", "content": sample.reference}],
                                         tokenize=False)
    if not full.startswith(prompt):
        # Templates that rewrite earlier turns: fall back to the answer appended to the prompt.
        full = prompt + sample.reference + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):].rstrip("\n"), add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return (input_ids, labels) if any(t != IGNORE_INDEX for t in labels[1:]) else None


def assistant_loss(model, tokenizer, samples: Sequence[Sample], *, batch_size: int = 8,
                   max_length: int = 2048) -> tuple[float, int]:
    """(mean NLL per answer token, number of answer tokens)."""
    import torch

    examples = [e for e in (_loss_example(tokenizer, s, max_length) for s in samples) if e is not None]
    examples.sort(key=lambda e: len(e[0]))  # similar lengths together: less padding
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (input_ids, label_ids) in enumerate(batch):
                ids[row, :len(input_ids)] = torch.tensor(input_ids)
                labels[row, :len(label_ids)] = torch.tensor(label_ids)
                mask[row, :len(input_ids)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            targets = labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                    ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(nll)
            count += int((targets != IGNORE_INDEX).sum())
    return (total / count if count else math.nan), count


def generate(model, tokenizer, samples: Sequence[Sample], *, max_new_tokens: int,
             batch_size: int = 8) -> Generations:
    """Greedy, batched, left-padded generation; answers come back in the samples' order."""
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
    prompts = [prompt_text(tokenizer, s) for s in samples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    token_ids: list[list[int]] = [[] for _ in prompts]
    new_tokens, seconds = 0, 0.0
    device = next(model.parameters()).device
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the last position: pad on the left
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
                t0 = time.perf_counter()
                out = model.generate(**enc, generation_config=config)
                seconds += time.perf_counter() - t0
                generated = out[:, enc["input_ids"].shape[1]:]
                for row, i in enumerate(idx):
                    tokens = generated[row].tolist()
                    if tokenizer.eos_token_id in tokens:
                        tokens = tokens[:tokens.index(tokenizer.eos_token_id) + 1]
                    else:
                        tokens = [t for t in tokens if t != pad_id]
                    new_tokens += len(tokens)
                    token_ids[i] = tokens
                    texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = saved_side
    return Generations(texts=texts, new_tokens=new_tokens, seconds=seconds, token_ids=token_ids)


def wanted_metrics(spec: EvaluationSpec) -> list[str]:
    """The spec's metrics plus whatever the gate names (a gate on an unmeasured metric would always fail)."""
    names = list(dict.fromkeys([*spec.metrics, *spec.gate]))
    evaluators = {e.name for e in spec.evaluators}
    return [n for n in names if n not in evaluators]


def score_model(model, tokenizer, samples: Sequence[Sample], spec: EvaluationSpec, *, batch_size: int = 8,
                max_length: int = 2048) -> ModelScores:
    names = wanted_metrics(spec)
    scores = ModelScores()
    if {"loss", "perplexity"} & set(names):
        loss, _ = assistant_loss(model, tokenizer, samples, batch_size=batch_size, max_length=max_length)
        scores.metrics["loss"] = loss
        scores.metrics["perplexity"] = math.exp(loss) if loss < 700 else math.inf
    if GENERATION_METRICS & set(names) or spec.evaluators:
        gens = generate(model, tokenizer, samples, max_new_tokens=spec.max_new_tokens, batch_size=batch_size)
        scores.predictions = gens.texts
        scores.metrics.update(text_metrics(names, gens.texts, [s.reference for s in samples], spec.evaluators))
        scores.metrics["tokensPerSecond"] = gens.new_tokens / gens.seconds if gens.seconds > 0 else 0.0
        scores.metrics["latencyMs"] = 1000 * gens.seconds / max(len(samples), 1)
    return scores


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    # NaN/inf cannot travel in Kubernetes JSON; the gate has already seen (and explained) them.
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def judge(spec: EvaluationSpec, base: dict[str, float], tuned: dict[str, float]) -> EvaluationResult:
    """Apply the gate and package both score sets as the API's EvaluationResult."""
    verdict, checks = apply_gate(spec.gate, base, tuned)
    for check in checks:
        check.base = check.base if check.base is not None and math.isfinite(check.base) else None
        check.tuned = check.tuned if check.tuned is not None and math.isfinite(check.tuned) else None
    primary = next(iter(spec.gate), None) or next(iter(spec.metrics), None)
    score = tuned.get(primary) if primary else None
    return EvaluationResult(verdict=verdict, base=_finite(base), tuned=_finite(tuned), checks=checks,
                            primary_metric=primary,
                            score=score if score is not None and math.isfinite(score) else None)


def compare(model, tokenizer, rows: Sequence[dict[str, Any]], spec: EvaluationSpec, *,
            out_dir: Path | None = None, batch_size: int = 8, max_length: int = 2048) -> EvaluationResult:
    """Score `model` (a peft model) with its adapter disabled (base) and enabled (tuned); gate; write files."""
    check_evaluators(spec.evaluators)
    samples = to_samples(rows, spec.max_samples)
    if not samples:
        raise EvaluationDataError("held-out split is empty: nothing to evaluate")
    was_training = model.training
    model.eval()
    try:
        base_ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
        with base_ctx:
            base = score_model(model, tokenizer, samples, spec, batch_size=batch_size, max_length=max_length)
        tuned = score_model(model, tokenizer, samples, spec, batch_size=batch_size, max_length=max_length)
    finally:
        model.train(was_training)
    result = judge(spec, base.metrics, tuned.metrics)
    if out_dir is not None:
        write_evaluation(out_dir, result, samples, base.predictions, tuned.predictions)
    return result


def write_evaluation(out_dir: Path, result: EvaluationResult, samples: Sequence[Sample],
                     base_predictions: Sequence[str], tuned_predictions: Sequence[str]) -> Path:
    """evaluation.json (the EvaluationResult, camelCase) and samples.jsonl (what each model answered)."""
    out_dir = Path(out_dir)
    lines = []
    for i, sample in enumerate(samples):
        lines.append(json.dumps({
            "prompt": sample.prompt[-1]["content"], "reference": sample.reference,
            "base": base_predictions[i] if i < len(base_predictions) else None,
            "tuned": tuned_predictions[i] if i < len(tuned_predictions) else None,
        }, ensure_ascii=False))
    atomic_write_text(out_dir / SAMPLES_FILE, "\n".join(lines) + "\n")
    atomic_write_json(out_dir / EVALUATION_FILE, result.model_dump(mode="json", by_alias=True, exclude_none=True))
    return out_dir / EVALUATION_FILE


def read_evaluation(path: Path) -> EvaluationResult:
    """Read evaluation.json (a file or the eval/ folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVALUATION_FILE
    try:
        return EvaluationResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid evaluation result: {exc}") from None


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Read a canonical jsonl split; a bad line is reported with its file and line number."""
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise EvaluationDataError(f"{path}:{n}: not valid JSON: {exc}") from None
    return rows


def evaluate(job: FineTuneJob, *, adapter_dir: Path, rows: list[dict], out_dir: Path,
             model=None, tokenizer=None, home: Path | str | None = None) -> EvaluationResult:
    """Contract entry point. Loads the base (float32) and the adapter unless a peft `model` is passed
    (e.g. straight from training, to skip a reload)."""
    spec = job.spec.evaluation
    if not spec.enabled:
        result = EvaluationResult(verdict="Skipped")
        atomic_write_json(Path(out_dir) / EVALUATION_FILE, result.model_dump(mode="json", by_alias=True,
                                                                             exclude_none=True))
        return result
    check_evaluators(spec.evaluators)  # before loading anything
    to_samples(rows, spec.max_samples)
    if tokenizer is None:
        tokenizer = _load_tokenizer(job, Path(adapter_dir), home)
    if model is None:
        import torch

        from tuneops.runtime.models import load_model

        model = load_adapted(load_model(job.spec.base_model, dtype=torch.float32, home=home), Path(adapter_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return compare(model, tokenizer, rows, spec, out_dir=Path(out_dir), batch_size=job.spec.training.batch_size * 2,
                   max_length=job.spec.training.max_seq_length)


def _load_tokenizer(job: FineTuneJob, adapter_dir: Path, home: Path | str | None):
    """The tokenizer saved with the adapter (with the family's fix-ups applied), else the base model's."""
    from tuneops.runtime.models import load_tokenizer, prepare_tokenizer

    if (adapter_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return prepare_tokenizer(AutoTokenizer.from_pretrained(adapter_dir), job.spec.base_model.family)
    return load_tokenizer(job.spec.base_model, home=home)
