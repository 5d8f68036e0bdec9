"""The human side of a prepared dataset: a markdown data card and a PNG length histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneops.api.dataset import DatasetSpec

from .errors import INVALID_REASONS
from .stats import Distributions

SAMPLE_ROWS = 3
SAMPLE_CHARS = 300


def write_histogram(dist: Distributions, path: Path) -> Path | None:
    """Token lengths when a tokenizer was given, else character lengths. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display in pods or CI
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    lengths, unit = (dist.tokens, "tokens") if dist.tokens else (dist.chars, "characters")
    if not lengths:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    values, weights = zip(*sorted(lengths.items()))
    ax.hist(values, bins=min(40, max(5, len(values))), weights=weights, color="#4477aa")
    ax.set_xlabel(f"sample length ({unit})")
    ax.set_ylabel("samples")
    ax.set_title(f"Length of {sum(weights)} kept samples")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)
    return path


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _lengths_line(summary: dict[str, Any] | None, unit: str) -> str:
    if not summary or not summary.get("count"):
        return f"- {unit}: n/a"
    return (f"- {unit}: min {summary['min']}, median {summary['p50']}, p95 {summary['p95']}, "
            f"p99 {summary['p99']}, max {summary['max']}, mean {summary['mean']}")


def write_datacard(spec: DatasetSpec, manifest: dict[str, Any], path: Path, folder: Path) -> None:
    counts = manifest["counts"]
    parts = [
        f"# Data card: {spec.source}",
        "",
        f"- version: `{manifest['version']}`" + ("" if manifest["status"] == "ok" else
                                                 f" — **FAILED**: {manifest.get('failure')}"),
        f"- format: {spec.format}; prepared by {manifest['createdBy']}",
        "- sources: " + ", ".join(f"`{s['uri']}` ({s['rows']} rows, `{s['sha256'][:19]}…`)"
                                  for s in manifest["sources"]),
        "",
        "## Counts",
        "",
        _table([(k, v) for k, v in counts.items()], ("", "rows")),
        "",
        f"Every row read is accounted for: kept {counts['kept']} + rejected {counts['rejected']} = read "
        f"{counts['read']}. Rejected rows are in `rejects.jsonl` with source, line, field and reason.",
    ]
    if manifest["rejectedByReason"]:
        parts += ["", "## Rejected by reason", "",
                  _table([(r, n, "invalid" if r in INVALID_REASONS else "filtered")
                          for r, n in manifest["rejectedByReason"].items()], ("reason", "rows", "kind")),
                  "", f"Invalid fraction {manifest['invalidFraction']:.2%} (limit "
                      f"{spec.validation.max_rejected_fraction:.2%}, validation.maxRejectedFraction)."]
    parts += ["", "## Lengths", "", _lengths_line(manifest.get("charLengths"), "characters"),
              _lengths_line(manifest.get("tokenLengths"), "tokens (chat template applied)")]
    if manifest.get("histogramPng"):
        parts += ["", f"![length histogram]({manifest['histogramPng']})"]
    parts += ["", "## Roles and turns", "",
              _table(list(manifest["roles"].items()), ("role", "turns")), "",
              _table(list(manifest["turnsPerSample"].items()), ("turns per sample", "samples"))]
    for key, values in (manifest.get("labels") or {}).items():
        parts += ["", f"### Label `{key}`", "", _table(list(values.items()), ("value", "samples"))]
    c = spec.cleaning
    parts += ["", "## Processing", "",
              f"- cleaning: NFC {c.normalize_unicode}, control chars {c.strip_control_chars}, whitespace "
              f"{c.collapse_whitespace}, HTML {c.strip_html}, markdown {c.strip_markdown}, chars "
              f"[{c.min_chars}, {c.max_chars or '∞'}], dedupe {c.dedupe}, PII redaction {c.redact_pii}",
              f"- redactions: {manifest.get('redactions') or 'none'}; truncated to maxSeqLength: "
              f"{manifest.get('truncated', 0)}",
              f"- split: validation {spec.split.validation:g}, test {spec.split.test:g}, seed {spec.split.seed} "
              "(by content hash: stable under reordering; identical samples share a split)",
              f"- leakage check: {manifest.get('leakage') or 'off'}",
              f"- config hash: `{manifest['configHash']}`"]
    train = folder / "train.jsonl"
    if train.exists():
        samples = []
        with train.open(encoding="utf-8") as fh:
            for _, line in zip(range(SAMPLE_ROWS), fh):
                text = line.strip()
                samples.append(text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…")
        parts += ["", "## Samples (train)", "", "```json", *samples, "```"]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
