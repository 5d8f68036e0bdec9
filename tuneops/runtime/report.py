"""The per-run report: training/eval curves and a base-vs-tuned chart (PNG), a markdown report, a terminal
table, and the same numbers logged to MLflow.

Everything is rebuilt from files in the run folder (eval/evaluation.json, the trainer's log history), so
`tuneops report RUN` works long after the run, without MLflow or the model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.api.evaluation import EvaluationResult
from tuneops.runtime import paths
from tuneops.runtime.evaluate import EVALUATION_FILE, read_evaluation
from tuneops.runtime.export import atomic_write_json, atomic_write_text
from tuneops.runtime.gate import is_better, lower_is_better

HISTORY_FILE = "history.json"
CURVES_PNG = "curves.png"
COMPARISON_PNG = "comparison.png"
REPORT_MD = "report.md"


@dataclass
class Row:
    metric: str
    base: float | None
    tuned: float | None
    gate: str  # "pass", "FAIL" or "" when no rule names the metric

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.tuned is None else self.tuned - self.base

    @property
    def direction(self) -> str:
        if self.delta is None or self.delta == 0:
            return ""
        return "better" if is_better(self.metric, self.tuned, self.base) else "worse"


# ---------------------------------------------------------------------------------------------------------
# Inputs.

def load_history(run_dir: Path) -> list[dict[str, Any]]:
    """The trainer's log history: eval/history.json if a report was written, else the newest complete
    checkpoint's trainer_state.json."""
    layout = paths.RunLayout(run_dir)
    saved = layout.eval / HISTORY_FILE
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))
    states = sorted(layout.checkpoints.glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.rpartition("-")[2]) if p.parent.name[-1].isdigit() else -1)
    if not states:
        return []
    return json.loads(states[-1].read_text(encoding="utf-8")).get("log_history", [])


def rows(result: EvaluationResult) -> list[Row]:
    """One row per metric either model has, gate-named metrics first (in gate order)."""
    gate = {c.metric: ("pass" if c.passed else "FAIL") for c in result.checks}
    names = list(dict.fromkeys([*gate, *result.base, *result.tuned]))
    return [Row(n, result.base.get(n), result.tuned.get(n), gate.get(n, "")) for n in names]


# ---------------------------------------------------------------------------------------------------------
# Text.

def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4f}" if abs(x) < 100 else f"{x:.1f}"


def format_table(result: EvaluationResult) -> str:
    """A plain-text table for the terminal, then the verdict and each failed rule's reason."""
    header = ("metric", "base", "tuned", "delta", "", "gate")
    body = [(r.metric, _num(r.base), _num(r.tuned), "-" if r.delta is None else f"{r.delta:+.4g}", r.direction,
             r.gate) for r in rows(result)]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                                 for i, (v, w) in enumerate(zip(line, widths))).rstrip()
    lines = [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, body), "", f"verdict: {result.verdict}"]
    lines += [f"  {'ok  ' if c.passed else 'FAIL'} {c.reason}" for c in result.checks]
    return "\n".join(lines)


def markdown(title: str, result: EvaluationResult, *, summary: dict[str, Any] | None = None,
             images: list[str] = ()) -> str:
    out = [f"# {title}", "", f"**Eval gate: {result.verdict}**"]
    if result.primary_metric:
        out[-1] += f" — primary metric `{result.primary_metric}` = {_num(result.score)}"
    out += ["", "| metric | base | tuned | delta | | gate |", "|---|---:|---:|---:|---|---|"]
    for r in rows(result):
        delta = "-" if r.delta is None else f"{r.delta:+.4g}"
        arrow = "lower is better" if lower_is_better(r.metric) else ""
        out.append(f"| `{r.metric}` | {_num(r.base)} | {_num(r.tuned)} | {delta} | {r.direction} {arrow}".rstrip()
                   + f" | {r.gate} |")
    if result.checks:
        out += ["", "## Gate rules", ""]
        out += [f"- {'✅' if c.passed else '❌'} {c.reason}" for c in result.checks]
    if summary:
        out += ["", "## Training", "", "| | |", "|---|---|"]
        out += [f"| {k} | {_num(v) if isinstance(v, float) else v} |" for k, v in summary.items()]
    for image in images:
        out += ["", f"![{Path(image).stem}]({image})"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Figures.

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # pods and CI have no display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, Any]], out: Path) -> Path | None:
    """Train and eval loss vs step (and the learning rate, when logged), or None without any history."""
    train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e and "step" in e]
    lr = [(e["step"], e["learning_rate"]) for e in history if "learning_rate" in e and "step" in e]
    if not train and not evals:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if lr else 1, figsize=(10 if lr else 6, 3.5), dpi=100, squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set(xlabel="optimizer step", ylabel="loss", title="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if lr:
        axes[0][1].plot(*zip(*lr), color="tab:green")
        axes[0][1].set(xlabel="optimizer step", title="learning rate")
        axes[0][1].grid(alpha=0.3)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_comparison(result: EvaluationResult, out: Path) -> Path | None:
    """One small bar pair (base, tuned) per metric — metrics live on different scales, so no shared axis."""
    pairs = [r for r in rows(result) if r.base is not None and r.tuned is not None
             and math.isfinite(r.base) and math.isfinite(r.tuned)]
    if not pairs:
        return None
    plt = _pyplot()
    cols = min(4, len(pairs))
    nrows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.8 * nrows), dpi=100, squeeze=False)
    for ax, r in zip(axes.flat, pairs):
        tuned_color = {"pass": "tab:green", "FAIL": "tab:red"}.get(r.gate, "tab:blue")
        bars = ax.bar(["base", "tuned"], [r.base, r.tuned], color=["tab:gray", tuned_color])
        ax.bar_label(bars, labels=[_num(r.base), _num(r.tuned)], fontsize=8)
        ax.set_title(r.metric + (" (lower is better)" if lower_is_better(r.metric) else ""), fontsize=9)
        ax.margins(y=0.2)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.suptitle(f"base vs tuned — eval gate {result.verdict}")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------------------------------------------------
# Putting it together.

def training_summary(run_dir: Path) -> dict[str, Any]:
    """Headline numbers from result.json (what the trainer wrote at exit), if present."""
    try:
        result = json.loads(paths.RunLayout(run_dir).result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    summary: dict[str, Any] = {k: result[k] for k in ("phase", "datasetHash", "mlflowRunId") if result.get(k)}
    for key, value in (result.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not key.endswith("_runtime"):
            summary[key] = float(value)
    return summary


@dataclass
class ReportFiles:
    markdown: Path
    curves: Path | None
    comparison: Path | None


def write_report(run_dir: Path, result: EvaluationResult | None = None, *,
                 history: list[dict[str, Any]] | None = None, title: str | None = None) -> ReportFiles:
    """Write eval/report.md, eval/curves.png, eval/comparison.png (and eval/history.json) for a run."""
    layout = paths.RunLayout(run_dir)
    result = result or read_evaluation(layout.eval / EVALUATION_FILE)
    history = history if history is not None else load_history(run_dir)
    if history:
        atomic_write_json(layout.eval / HISTORY_FILE, history)
    curves = plot_curves(history, layout.eval / CURVES_PNG)
    comparison = plot_comparison(result, layout.eval / COMPARISON_PNG)
    images = [p.name for p in (curves, comparison) if p is not None]
    text = markdown(title or f"Run {Path(run_dir).name}", result, summary=training_summary(run_dir), images=images)
    md = atomic_write_text(layout.eval / REPORT_MD, text)
    return ReportFiles(markdown=md, curves=curves, comparison=comparison)


def log_to_mlflow(client, run_id: str, result: EvaluationResult, files: ReportFiles | None = None) -> None:
    """Scores as metrics (base.<m>, tuned.<m>), the verdict as a tag, the table and the report as artifacts."""
    from mlflow.entities import Metric

    metrics = {f"base.{k}": v for k, v in result.base.items()}
    metrics.update({f"tuned.{k}": v for k, v in result.tuned.items()})
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.set_tag(run_id, "tuneops.gate_verdict", result.verdict)
    client.log_dict(run_id, result.model_dump(mode="json", by_alias=True, exclude_none=True), "eval/evaluation.json")
    table = {"metric": [], "base": [], "tuned": [], "delta": [], "gate": []}
    for r in rows(result):
        for key, value in (("metric", r.metric), ("base", r.base), ("tuned", r.tuned), ("delta", r.delta),
                           ("gate", r.gate)):
            table[key].append(value)
    client.log_table(run_id, data=table, artifact_file="eval/comparison_table.json")
    if files is not None:
        for path in (files.markdown, files.curves, files.comparison):
            if path is not None:
                client.log_artifact(run_id, str(path), "eval")
