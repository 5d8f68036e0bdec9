"""FineTuneJob.spec.dataset: where the data is, what shape it has, and how it is cleaned and checked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Rule, TuneopsModel, no_userinfo_rule, rules

DatasetFormat = Literal["alpaca", "sharegpt", "openai-messages", "prompt-completion", "text"]

# Where a dataset may come from: object stores and files (fsspec), a hub dataset in the local cache, or a
# path (relative paths resolve against the spec file's folder in embedded runs).
DATASET_SOURCE = r"^((s3|gs|gcs|az|abfs|file|hf|https?)://[^\s]+|[^:\s]+)$"


class CleaningSpec(TuneopsModel):
    """Cleaning rules, each switchable. Applied in this order: normalise, filter, redact, dedupe (so rows
    that differ only in PII count as duplicates)."""

    normalize_unicode: bool = Field(default=True, description="Unicode NFC normalisation.")
    strip_control_chars: bool = Field(default=True, description="Drop control characters (keeps \\n and \\t).")
    collapse_whitespace: bool = Field(default=True, description="Collapse runs of spaces; trim turns.")
    strip_html: bool = Field(default=False, description="Remove HTML tags and entities.")
    strip_markdown: bool = Field(default=False, description="Remove markdown emphasis/link residue.")
    min_chars: int = Field(default=1, ge=0, description="Drop samples shorter than this (all turns).")
    max_chars: int | None = Field(default=None, gt=0, description="Drop samples longer than this.")
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    dedupe: Literal["none", "exact", "near"] = Field(
        default="exact", description="exact: hash of normalised text; near: MinHash-LSH (includes exact).")
    near_duplicate_threshold: float = Field(default=0.85, gt=0, le=1, description="Jaccard threshold for near dedupe.")
    redact_pii: bool = Field(default=False, alias="redactPII", description="Replace emails, phone numbers and keys with placeholders.")


class ValidationRulesSpec(TuneopsModel):
    max_rejected_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Fail the job when more than this fraction of rows is rejected.")
    on_too_long: Literal["reject", "truncate"] = Field(
        default="reject", description="What to do with samples over training.maxSeqLength tokens.")
    require_assistant_turn: bool = True
    check_leakage: bool = Field(default=True, description="No identical sample may be in two splits.")


class SplitSpec(TuneopsModel):
    validation: float = Field(default=0.05, ge=0, lt=1, description="Fraction held out for evaluation.")
    test: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 42
    max_validation_samples: int | None = Field(default=None, gt=0)


@rules(
    no_userinfo_rule("source"),
    Rule(
        cel="self.split.validation + self.split.test < 1.0",
        message="validation + test fractions must leave data to train on (< 1)",
        check=lambda s: s.split.validation + s.split.test < 1.0,
        field=".split",
    ),
)
class DatasetSpec(TuneopsModel):
    source: str = Field(
        pattern=DATASET_SOURCE, max_length=2048,
        description="URI (s3://, gs://, file://, hf://, https://) or path to JSONL/JSON/CSV/Parquet or a datasets dir.")
    format: DatasetFormat
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Map this format's field names to the dataset's columns, e.g. {instruction: question}.")
    system_prompt: str | None = Field(default=None, max_length=8192, description="Prepended as a system turn.")
    cleaning: CleaningSpec = Field(default_factory=CleaningSpec)
    validation: ValidationRulesSpec = Field(default_factory=ValidationRulesSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    max_samples: int | None = Field(default=None, gt=0, description="Use at most this many rows (after cleaning).")

