"""Sample-based preflight checks that need the dataset, the tokenizer or the model config, on top of the
cheap plan of tuneops.planning (memory, GPU suggestion, time):

- dataset schema: the first N rows through the data pipeline's own per-row rules (errors named by line);
- chat template: the family's template applied to every sampled row; the prompt must render as a prefix of
  prompt+completion (what completion-only loss relies on) and the answer must survive the template;
- lengths: tokenised length distribution, truncation % at maxSeqLength, packing efficiency;
- LoRA target modules against the model's real module names (the model built from config.json on the meta
  device: no weights are read).

Checks that cannot run here (no tokenizer in the local cache, a remote dataset) are reported as skipped
with the reason, never guessed.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.api.finetunejob import FineTuneJob
from tuneops.api.plan import LengthStats, Plan, PlanCheck
from tuneops.planning import architectures, planner

log = logging.getLogger(__name__)

SAMPLE_ROWS = 256
SHOWN_ERRORS = 5


@dataclass
class Sample:
    rows: list[tuple[int, list[dict[str, str]]]] = field(default_factory=list)  # (line, messages) valid rows
    errors: list[tuple[int, str, str]] = field(default_factory=list)           # (line, reason, message)
    read: int = 0
    total_rows: int | None = None                                                # whole file(s), if counted


def _skip(name: str, message: str) -> PlanCheck:
    return PlanCheck(name=name, ok=True, skipped=True, message=message)


def read_sample(job: FineTuneJob, *, base_dir: Path | None, limit: int = SAMPLE_ROWS,
                count_all: bool = True) -> Sample:
    """The first `limit` rows through the pipeline's per-row rules; `total_rows` counts every row."""
    from .data.errors import INVALID_REASONS, RowError
    from .data.readers import SourceStats, iter_rows, resolve_sources
    from .data.rowproc import RowProcessor

    spec = job.spec.dataset
    processor = RowProcessor(spec)
    sample = Sample()
    total = 0
    for sf in resolve_sources(spec.source, base_dir):
        for line, obj, error, raw in iter_rows(sf, SourceStats(sf.uri)):
            total += 1
            if sample.read >= limit:
                if not count_all:
                    break
                continue
            sample.read += 1
            try:
                if error is not None:
                    raise error
                processed = processor.process(obj, raw)
            except RowError as err:
                if err.reason in INVALID_REASONS:
                    sample.errors.append((line, err.reason, (f"{err.field}: " if err.field else "") + err.message))
                continue
            sample.rows.append((line, json.loads(processed[2])["messages"]))
    sample.total_rows = total if count_all else None
    return sample


def schema_check(job: FineTuneJob, sample: Sample) -> PlanCheck:
    if not sample.read:
        return PlanCheck(name="dataset", ok=False, message=f"dataset.source {job.spec.dataset.source}: no rows")
    share = len(sample.errors) / sample.read
    limit = job.spec.dataset.validation.max_rejected_fraction
    shown = "; ".join(f"line {line}: {msg} ({reason})" for line, reason, msg in sample.errors[:SHOWN_ERRORS])
    summary = f"{sample.read} rows sampled, {len(sample.errors)} invalid ({share:.1%})"
    if share > limit:
        return PlanCheck(name="dataset", ok=False, message=f"{summary} > validation.maxRejectedFraction "
                         f"{limit:.1%} ({job.spec.dataset.format}): {shown}")
    return PlanCheck(name="dataset", ok=True, message=summary + (f": {shown}" if shown else ""))


def template_check(tokenizer: Any, sample: Sample) -> PlanCheck:
    """Apply the chat template to each sampled row, as training does (prompt, then prompt + completion)."""
    errors: list[str] = []
    for line, messages in sample.rows:
        prompt, answer = messages[:-1], messages[-1]
        try:
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) if prompt else ""
        except Exception as exc:  # noqa: BLE001 - jinja raises anything; the row and message are what matter
            errors.append(f"line {line}: the chat template fails: {type(exc).__name__}: {exc}")
            continue
        if not full.startswith(head):
            errors.append(f"line {line}: the rendered prompt is not a prefix of prompt+completion "
                          "(completion-only loss would mask the wrong tokens)")
        elif answer["content"].strip() and answer["content"].strip()[:64] not in full:
            errors.append(f"line {line}: the template drops the {answer['role']} turn's text")
    n = len(sample.rows)
    if errors:
        return PlanCheck(name="chatTemplate", ok=False,
                         message=f"{len(errors)} of {n} sampled rows: " + "; ".join(errors[:SHOWN_ERRORS]))
    return PlanCheck(name="chatTemplate", ok=True, message=f"applied to {n} sampled rows")


def token_lengths(tokenizer: Any, sample: Sample) -> list[int]:
    texts = tokenizer.apply_chat_template([m for _, m in sample.rows], tokenize=False)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def packing_efficiency(lengths: list[int], max_len: int) -> float:
    """Fill of maxSeqLength rows when the samples are packed best-fit-decreasing (what TRL's bfd does;
    over-long samples are truncated to max_len first)."""
    if not lengths:
        return 0.0
    bins: list[int] = []  # free space per bin
    for n in sorted((min(x, max_len) for x in lengths), reverse=True):
        best = min((i for i, free in enumerate(bins) if free >= n), key=lambda i: bins[i], default=None)
        if best is None:
            bins.append(max_len - n)
        else:
            bins[best] -= n
    return round(sum(min(x, max_len) for x in lengths) / (len(bins) * max_len), 4)


def length_stats(lengths: list[int], max_len: int) -> LengthStats:
    if not lengths:
        return LengthStats(sampled_rows=0)
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    over = sum(1 for x in lengths if x > max_len)
    return LengthStats(sampled_rows=len(lengths), mean=round(sum(lengths) / len(lengths), 1), p50=pct(0.5),
                       p95=pct(0.95), max=ordered[-1], truncated_percent=round(100 * over / len(lengths), 2),
                       packing_efficiency=packing_efficiency(lengths, max_len))


def length_check(job: FineTuneJob, stats: LengthStats) -> PlanCheck:
    t, v = job.spec.training, job.spec.dataset.validation
    msg = (f"tokens p50 {stats.p50}, p95 {stats.p95}, max {stats.max}; {stats.truncated_percent:.1f}% over "
           f"training.maxSeqLength {t.max_seq_length}; packing efficiency {stats.packing_efficiency:.0%}")
    if stats.truncated_percent and v.on_too_long == "reject" \
            and stats.truncated_percent / 100 > v.max_rejected_fraction:
        return PlanCheck(name="lengths", ok=False, message=msg + f" (rejected by validation.onTooLong: reject, more "
                         f"than validation.maxRejectedFraction {v.max_rejected_fraction:.1%})")
    return PlanCheck(name="lengths", ok=True, message=msg)


def linear_module_names(model_dir: Path, trust_remote_code: bool = False) -> tuple[str, set[str]]:
    """(model_type, leaf names of every Linear/Embedding) of the model built from config.json on the meta
    device: the exact names peft matches targets against, without reading a weight."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding))}
    return config.model_type, names


def targets_check(job: FineTuneJob, model_label: str, names: set[str]) -> PlanCheck | None:
    from .models import lora_target_modules

    if job.spec.method == "full":
        return None
    lora = job.spec.lora_or_default()
    targets = lora_target_modules(job.spec.base_model.family, lora.target_modules)
    if isinstance(targets, str):  # all-linear, or a family regex peft applies itself
        return PlanCheck(name="lora.targetModules", ok=True, message=f"{targets} (matched by peft) on {model_label}")
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in names]
    if missing:
        return PlanCheck(name="lora.targetModules", ok=False,
                         message=f"lora.targetModules: {', '.join(repr(m) for m in missing)} not found in "
                                 f"{model_label}; available: {', '.join(sorted(names))}")
    return PlanCheck(name="lora.targetModules", ok=True, message=f"{', '.join(targets)} found in {model_label}")


def _train_rows(job: FineTuneJob, total: int | None) -> int | None:
    if total is None:
        return None
    split = job.spec.dataset.split
    rows = int(total * (1 - split.validation - split.test))
    return min(rows, job.spec.dataset.max_samples) if job.spec.dataset.max_samples else rows


def preflight(job: FineTuneJob, *, base_dir: Path | None = None, home: Path | str | None = None,
              device: str | None = None, sample_rows: int = SAMPLE_ROWS, read_remote: bool = False) -> Plan:
    """The full plan: tuneops.planning's estimates refined with config.json and a dataset sample."""
    from .models import ModelSourceError, load_tokenizer, resolve_model_dir

    spec = job.spec
    checks: list[PlanCheck] = []
    arch = None
    model_dir: Path | None = None
    try:
        model_dir = resolve_model_dir(spec.base_model, home=home)
        config = json.loads((model_dir / "config.json").read_text())
        arch = architectures.from_config(config, name=planner.model_id(spec) or model_dir.name,
                                         source=f"config.json in {model_dir}")
    except (ModelSourceError, OSError, ValueError) as exc:
        arch = planner.builtin_architecture(spec)
        note = "using the built-in table" if arch else "no architecture known"
        checks.append(_skip("model", f"{exc} ({note}; sample checks needing the tokenizer skipped)"))

    # LoRA targets against the real module names when the config is here (the planner checks the table).
    real_targets = None
    if model_dir is not None and spec.method != "full":
        try:
            model_type, names = linear_module_names(model_dir, spec.base_model.trust_remote_code)
            real_targets = targets_check(job, f"{arch.name if arch else model_dir.name} ({model_type})", names)
        except Exception as exc:  # noqa: BLE001 - a config transformers cannot build is reported, not raised
            real_targets = PlanCheck(name="lora.targetModules", ok=False,
                                     message=f"cannot build the model from {model_dir}/config.json: {exc}")

    sample: Sample | None = None
    remote = "://" in spec.dataset.source and not spec.dataset.source.startswith("file://")
    if remote and not read_remote:
        checks.append(_skip("dataset", f"dataset.source {spec.dataset.source} is remote; not read by the planner "
                                       "(pass --read-remote to sample it)"))
    else:
        from .data.errors import DataError

        try:
            sample = read_sample(job, base_dir=base_dir, limit=sample_rows)
            checks.append(schema_check(job, sample))
        except DataError as exc:
            checks.append(PlanCheck(name="dataset", ok=False, message=str(exc)))

    stats: LengthStats | None = None
    tokenizer = None
    if model_dir is not None:
        try:
            tokenizer = load_tokenizer(spec.base_model, home=home)
        except Exception as exc:  # noqa: BLE001 - reported as a skipped check with the reason
            checks.append(_skip("chatTemplate", f"tokenizer unavailable: {exc}"))
    else:
        checks.append(_skip("chatTemplate", "needs the tokenizer, which is not in the local cache"))
        checks.append(_skip("lengths", "needs the tokenizer, which is not in the local cache"))
    if tokenizer is not None and sample is not None and sample.rows:
        checks.append(template_check(tokenizer, sample))
        stats = length_stats(token_lengths(tokenizer, sample), spec.training.max_seq_length)
        checks.append(length_check(job, stats))
    elif tokenizer is not None:
        checks.append(_skip("chatTemplate", "no dataset sample to apply it to"))

    plan = planner.plan_job(spec, arch=arch, device=device, lengths=stats,
                            train_rows=_train_rows(job, sample.total_rows if sample else None), extra_checks=checks)
    if real_targets is not None:  # the module names of the real model win over the table's
        merged = [real_targets if c.name == "lora.targetModules" else c for c in plan.checks]
        plan = plan.model_copy(update={"checks": merged, "ok": all(c.ok for c in merged)})
    return plan
