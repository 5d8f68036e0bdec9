"""The embedded run (`tuneops run FILE`): the same FineTuneJob a cluster runs, end to end on this machine.

validate -> prepare data -> train -> evaluate -> export -> register, each step a contract function
(docs/dev/contracts.md). A step whose module is missing stops the run with a message naming it: nothing is
ever faked. Re-running resumes: prepared data is reused, training resumes from its last checkpoint.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .paths import RunLayout, run_dir, tuneops_home
from .progress import write_result

STEPS = ("validate", "prepare data", "train", "evaluate", "export", "register")


class PipelineStopped(RuntimeError):
    """A step cannot run; the message says which and why."""


@dataclass
class PipelineResult:
    run_dir: Path
    steps_done: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    ok: bool = False


def _needs(module: str, step: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PipelineStopped(f"step '{step}' needs {module}, which is not available: {exc}") from exc


class StepPrinter:
    """One line per step with its wall time; the Trainer draws its own tqdm bar inside 'train'."""

    def __init__(self, out=None):
        self._out = out

    @property
    def out(self):
        return self._out or sys.stderr  # looked up late: stderr may be replaced (tests, redirection)

    def run(self, index: int, name: str, fn: Callable[[], Any]) -> Any:
        print(f"[{index}/{len(STEPS)}] {name} ...", file=self.out, flush=True)
        started = time.perf_counter()
        value = fn()
        print(f"[{index}/{len(STEPS)}] {name} done in {time.perf_counter() - started:.1f}s", file=self.out, flush=True)
        return value


def run_pipeline(spec_file: Path, *, home: Path | str | None = None, max_steps: int | None = None,
                 printer: StepPrinter | None = None) -> PipelineResult:
    from .train import load_job

    printer = printer or StepPrinter()
    home = tuneops_home(home)
    spec_file = Path(spec_file)
    job = printer.run(1, "validate", lambda: load_job(spec_file))
    layout = RunLayout(run_dir(job.metadata.name, home))
    result = PipelineResult(layout.root, ["validate"])
    spec = job.spec
    try:
        data = printer.run(2, "prepare data", lambda: _prepare(job, layout, spec_file, home))
        result.steps_done.append("prepare data")
        result.summary["datasetHash"] = data.version

        from .train import train

        trained = printer.run(3, "train", lambda: train(job, run_dir=layout.root, data=data, home=home,
                                                         max_steps=max_steps, disable_tqdm=False))
        result.steps_done.append("train")
        result.summary.update(metrics=trained.metrics, mlflowRunId=trained.mlflow_run_id,
                              adapterUri=str(trained.adapter_dir) if trained.adapter_dir else None)
        if trained.adapter_dir is None:
            raise PipelineStopped("method full: evaluate/export/register take an adapter; the full model is in "
                                  f"{trained.model_dir}")

        evaluation = printer.run(4, "evaluate", lambda: evaluate_run(job, layout, data, trained.adapter_dir, home))
        result.steps_done.append("evaluate")
        result.summary["evaluation"] = evaluation.model_dump(mode="json", by_alias=True, exclude_none=True)

        merged = printer.run(5, "export", lambda: export_merged(job, layout, trained.adapter_dir, home))
        result.steps_done.append("export")
        result.summary["mergedUri"] = str(merged) if merged else None

        def register():
            if not spec.output.create_model_version:
                return None
            if evaluation.verdict == "Failed":
                raise PipelineStopped(f"evaluation gate failed: no ModelVersion registered (see {layout.eval})")
            from .tracking import resolve_tracking_uri

            registry = _needs("tuneops.runtime.registry", "register")
            return registry.register_version(job, run_dir=layout.root, evaluation=evaluation,
                                             mlflow_run_id=trained.mlflow_run_id,
                                             tracking_uri=resolve_tracking_uri(job, home), home=home)

        version = printer.run(6, "register", register)
        result.steps_done.append("register")
        if version is not None:
            result.summary["modelVersion"] = version.metadata.name
        result.ok = True
    except PipelineStopped as exc:
        result.summary["message"] = str(exc)
    finally:
        write_result(layout.root, {"phase": "Succeeded" if result.ok else "Failed",
                                   "stepsDone": result.steps_done, **result.summary})
    return result


def _prepare(job, layout: RunLayout, spec_file: Path, home: Path):
    from .models import load_tokenizer
    from .training_data import prepare_training_data

    tokenizer = load_tokenizer(job.spec.base_model, home=home)
    return prepare_training_data(job.spec.dataset, out_dir=layout.data, base_dir=spec_file.parent,
                                 tokenizer=tokenizer, max_seq_length=job.spec.training.max_seq_length)


def evaluate_run(job, layout: RunLayout, data, adapter_dir: Path, home: Path | None):
    """Base vs tuned on the test split (else validation), gate applied; shared with the pod entry point."""
    evaluate_module = _needs("tuneops.runtime.evaluate", "evaluate")
    split = Path(data.test_path) if Path(data.test_path).is_file() and Path(data.test_path).stat().st_size else \
        Path(data.validation_path)
    rows = evaluate_module.load_rows(split)
    if not rows and job.spec.evaluation.enabled:
        raise PipelineStopped(f"step 'evaluate': {split} is empty; set dataset.split.validation or test > 0")
    return evaluate_module.evaluate(job, adapter_dir=adapter_dir, rows=rows, out_dir=layout.eval, home=home)


def export_merged(job, layout: RunLayout, adapter_dir: Path, home: Path | None) -> Path | None:
    """The merged model in layout.merged when spec.output.mergeAdapter, else None (shared with the pod)."""
    spec = job.spec
    if not spec.output.merge_adapter:
        return None
    merge_adapter = _needs("tuneops.runtime.export", "export").merge_adapter
    return merge_adapter(spec.base_model, adapter_dir, layout.merged, spec.output.merged_dtype, home=home)
