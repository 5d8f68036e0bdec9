"""Supervised fine-tuning (LoRA, QLoRA, full) with transformers + peft + trl: what a training pod runs.

    python -m tuneops.runtime.train --spec job.yaml --output DIR

Speed choices on the default path (see bench/train_bench.py): padding-free batches (no FLOPs on padding),
completion-only loss with the LM head run only where a label is (sft_speed), sdpa attention, fp32 on CPU
(bf16 matmuls are emulated and slow on most CPUs), torch threads = the cores the pod may use, and
activation checkpointing only when the spec asks for it (it recomputes the forward pass).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneops.api.finetunejob import FineTuneJob

from . import checkpoints as ckpt
from .atomic import write_json_atomic
from .models import load_model, load_tokenizer, lora_target_modules
from .paths import RunLayout
from .progress import ProgressReporter, contract_metrics, write_result
from .sft_speed import configure_cpu_threads, sft_trainer_class
from .tracking import Tracker, plot_training_curve, resolve_tracking_uri
from .training_data import load_split

log = logging.getLogger(__name__)

ADAPTER_COMPLETE = "COMPLETE"


@dataclass
class TrainResult:
    adapter_dir: Path | None          # peft adapter (lora/qlora); None for full fine-tuning
    model_dir: Path                   # what evaluation/serving loads: the adapter, or the full model
    metrics: dict[str, float]
    mlflow_run_id: str | None
    steps: int                        # global optimizer steps at the end (== planned when complete)
    total_steps: int
    resumed_from: str | None = None
    steps_this_attempt: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("log_history")
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def precision_flags(precision: str) -> dict[str, bool]:
    """auto: bf16 where the GPU supports it, fp32 on CPU. TRL defaults to bf16, so always say it."""
    import torch

    if precision == "auto":
        precision = "bf16" if on_gpu() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def build_sft_config(job: FineTuneJob, output_dir: Path, *, max_steps: int | None = None,
                     has_eval: bool = True, disable_tqdm: bool | None = None):
    from trl import SFTConfig

    t = job.spec.training
    steps = max_steps or t.max_steps
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.log_every_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_every_steps else "no",
        save_steps=t.save_every_steps or 500,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if (t.eval_every_steps and has_eval) else "no",
        eval_steps=t.eval_every_steps,
        report_to="none",                      # MLflow is logged by tuneops (resumable run id)
        include_num_input_tokens_seen="non_padding",
        completion_only_loss=True,
        dataloader_num_workers=0,              # rows are pre-tokenised: workers would only add IPC
        dataloader_pin_memory=on_gpu(),
        use_cpu=not on_gpu(),
        disable_tqdm=disable_tqdm if disable_tqdm is not None else not sys.stderr.isatty(),
        **precision_flags(t.precision),
    )
    # transformers 5: warmup_steps < 1 is a ratio of the total steps (warmup_ratio is gone).
    kwargs["warmup_steps"] = t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio
    if t.packing:
        # best-fit-decreasing packing: whole samples share maxSeqLength rows, attention kept per sample.
        kwargs.update(packing=True, packing_strategy="bfd", max_length=t.max_seq_length)
    else:
        # Padding-free: the batch is one flat sequence with position ids restarting per sample (no padding
        # FLOPs). TRL cannot truncate in this mode; the data pipeline already enforces maxSeqLength.
        kwargs.update(padding_free=True, max_length=None)
    if job.spec.distribution.strategy != "none":
        from .distributed import trainer_args

        kwargs.update(trainer_args(job))
    return SFTConfig(**kwargs)


def build_model(job: FineTuneJob, *, home: Path | str | None = None):
    """The model to train: a peft LoRA model (on a 4-bit base for QLoRA), or the full model."""
    spec = job.spec
    gc = spec.training.gradient_checkpointing
    model = load_model(spec.base_model, quantization=spec.quantization if spec.method == "qlora" else None,
                       home=home)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    if spec.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = spec.lora_or_default()
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias, task_type="CAUSAL_LM",
        target_modules=lora_target_modules(spec.base_model.family, lora.target_modules))
    return get_peft_model(model, config)


def _trainer_callback_class():
    from transformers import TrainerCallback

    class TuneopsCallback(TrainerCallback):
        """Progress, MLflow metrics and checkpoint markers, from rank 0 only."""

        def __init__(self, layout: RunLayout, progress: ProgressReporter | None, tracker: Tracker | None,
                     remote: ckpt.RemoteCheckpoints | None, keep: int):
            self.layout, self.progress, self.tracker, self.remote, self.keep = layout, progress, tracker, remote, keep
            self._clock: tuple[float, int] | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self._clock = (time.perf_counter(), state.num_input_tokens_seen)
            if state.is_world_process_zero and self.progress:
                self.progress.update(phase="Running", step=state.global_step, totalSteps=state.max_steps,
                                     epoch=state.epoch or 0.0, force=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if self._clock and "loss" in logs:
                started, seen = self._clock
                elapsed = time.perf_counter() - started
                if elapsed > 0 and state.num_input_tokens_seen > seen:
                    logs["tokens_per_second"] = (state.num_input_tokens_seen - seen) / elapsed
                self._clock = (time.perf_counter(), state.num_input_tokens_seen)
            if not state.is_world_process_zero:
                return
            numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            if self.tracker:
                self.tracker.log_metrics({k: v for k, v in numeric.items() if k != "epoch"}, state.global_step)
            if self.progress:
                self.progress.update(step=state.global_step, totalSteps=state.max_steps, epoch=state.epoch,
                                     metrics=contract_metrics(numeric))

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            checkpoint = self.layout.checkpoints / f"checkpoint-{state.global_step}"
            if not checkpoint.is_dir():
                return
            ckpt.mark_complete(checkpoint)  # everything the Trainer writes is on disk by now
            ckpt.prune(self.layout.checkpoints, self.keep)
            last = str(checkpoint)
            if self.remote:
                last = self.remote.push(checkpoint, self.keep)
            if self.progress:
                self.progress.update(lastCheckpoint=last, force=True)

    return TuneopsCallback


def _resume_point(layout: RunLayout, remote: ckpt.RemoteCheckpoints | None) -> Path | None:
    ckpt.remove_incomplete(layout.checkpoints)
    latest = ckpt.latest_complete_checkpoint(layout.checkpoints)
    if remote is not None:
        remote_complete = remote.complete()
        if remote_complete and (latest is None or ckpt.checkpoint_step(remote_complete[-1]) > ckpt.checkpoint_step(latest)):
            latest = remote.pull_latest(layout.checkpoints)
    return latest


def save_atomically(trainer, tokenizer, target: Path) -> Path:
    """Save the adapter (or full model) + tokenizer into a staging dir, then rename; COMPLETE written last.

    Every rank calls this (FSDP/DeepSpeed gather weights collectively); rank 0 alone touches the files."""
    staging = target.parent / f".{target.name}.staging"
    rank0 = trainer.is_world_process_zero()
    if rank0:
        shutil.rmtree(staging, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if rank0:
        tokenizer.save_pretrained(str(staging))
        # The Trainer adds training_args.bin, a pickle: artifacts are safetensors/JSON only (the settings
        # are in resolved-config.json).
        (staging / "training_args.bin").unlink(missing_ok=True)
        (staging / ADAPTER_COMPLETE).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def train(job: FineTuneJob, *, run_dir: Path, data: Any, tracking: Tracker | str | None = "auto",
          home: Path | str | None = None, max_steps: int | None = None, progress: ProgressReporter | None = None,
          disable_tqdm: bool | None = None, callbacks: list | None = None) -> TrainResult:
    """Fine-tune `job`'s base model on `data` (a PreparedDataset); resumes from the newest complete checkpoint.

    tracking: a Tracker, "auto" (spec.tracking / $MLFLOW_TRACKING_URI / the local store), or None (off).
    callbacks: extra transformers TrainerCallbacks (e.g. the bench's step timer).
    """
    import torch

    configure_cpu_threads()
    layout = RunLayout(Path(run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    spec = job.spec
    torch.manual_seed(spec.training.seed)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if tracking == "auto":
        tracking = Tracker(resolve_tracking_uri(job, home), spec.tracking.experiment, home=home) if rank0 else None
    tracker = tracking if isinstance(tracking, Tracker) else None
    progress = progress or (ProgressReporter(layout.root) if rank0 else None)
    remote = ckpt.remote_checkpoints(spec.storage.checkpoints, job.metadata.name)

    tokenizer = load_tokenizer(spec.base_model, home=home)
    train_set = load_split(data.train_path)
    if train_set is None:
        raise ValueError(f"{data.train_path}: the training split is empty")
    eval_set = load_split(getattr(data, "validation_path", None))
    run_id = tracker.start(job, layout.root) if tracker else None
    if tracker:
        tracker.log_dataset(data.version, Path(data.out_dir) / "manifest.json", name=spec.dataset.source,
                            source=str(data.out_dir), sample_path=data.train_path)
    if progress:
        progress.update(phase="Running", mlflowRunId=run_id, datasetHash=data.version, force=True)

    try:
        result = _fit(job, layout, data, tokenizer, train_set, eval_set, tracker, progress, remote, run_id,
                      home=home, max_steps=max_steps, disable_tqdm=disable_tqdm, callbacks=callbacks)
    except BaseException:
        if tracker:
            tracker.finish(succeeded=False)
        raise
    if tracker:
        tracker.finish(succeeded=True)
    return result


def _fit(job, layout, data, tokenizer, train_set, eval_set, tracker, progress, remote, run_id, *,
         home, max_steps, disable_tqdm, callbacks=None) -> TrainResult:
    spec = job.spec
    model = build_model(job, home=home)
    config = build_sft_config(job, layout.checkpoints, max_steps=max_steps, has_eval=eval_set is not None,
                              disable_tqdm=disable_tqdm)
    callback = _trainer_callback_class()(layout, progress, tracker, remote, spec.training.save_total_limit)
    trainer = sft_trainer_class()(model=model, args=config, train_dataset=train_set, eval_dataset=eval_set,
                                  processing_class=tokenizer, callbacks=[callback, *(callbacks or [])])
    resume = _resume_point(layout, remote)
    metrics: dict[str, float] = {}
    if eval_set is not None and resume is None:
        # Held-out loss before any update: the baseline the fall of eval loss is measured against.
        metrics["initial_eval_loss"] = trainer.evaluate()["eval_loss"]
    start_step = ckpt.checkpoint_step(resume) if resume else 0
    if resume:
        log.info("resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics.update({k: float(v) for k, v in output.metrics.items() if isinstance(v, (int, float))})
    if eval_set is not None:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    state = trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    if losses:
        metrics["final_train_loss"] = float(losses[-1])
        metrics["first_train_loss"] = float(losses[0])

    metrics["world_size"] = float(trainer.args.world_size)
    target = layout.merged if spec.method == "full" else layout.adapter
    save_atomically(trainer, tokenizer, target)
    if trainer.is_world_process_zero():
        curve = plot_training_curve(state.log_history, layout.root / "training-curve.png")
        if tracker:
            tracker.log_metrics({k: v for k, v in metrics.items() if not k.endswith("_runtime")}, state.global_step)
            tracker.log_artifacts(target, "adapter" if spec.method != "full" else "model")
            if curve:
                tracker.log_artifacts(curve, "plots")
            resolved = layout.root / "resolved-config.json"
            write_json_atomic(resolved, {"job": job.spec.to_wire(), "sftConfig": config.to_dict()})
            tracker.log_artifacts(resolved, "config")
    return TrainResult(
        adapter_dir=None if spec.method == "full" else target, model_dir=target, metrics=metrics,
        mlflow_run_id=run_id, steps=state.global_step, total_steps=state.max_steps,
        resumed_from=str(resume) if resume else None, steps_this_attempt=state.global_step - start_step,
        log_history=list(state.log_history))


# ---------------------------------------------------------------------------------------------------------
# The pod entry point.

def load_job(path: Path) -> FineTuneJob:
    from tuneops.manifests import load_finetunejob

    return load_finetunejob(path)


def output_uri(job: FineTuneJob) -> str | None:
    """Where the pod publishes adapter/ and merged/: the operator's TUNEOPS_OUTPUT_URI
    (`<storage.output>/<ns>/<job>/`), else `<storage.output>/<job>/` for runs outside a cluster."""
    uri = os.environ.get("TUNEOPS_OUTPUT_URI") or (
        f"{job.spec.storage.output.rstrip('/')}/{job.metadata.name}" if job.spec.storage.output else None)
    return uri.rstrip("/") if uri else None


def finish_outputs(job: FineTuneJob, layout: RunLayout, data: Any, outcome: TrainResult, *,
                   home: Path | None, progress: ProgressReporter | None) -> dict[str, Any]:
    """What the embedded pipeline does after training, for the pod: evaluate (gate applied), merge when
    spec.output.mergeAdapter, publish to the output URI when it is an fsspec URI. Returns the result.json
    fields: adapterUri/mergedUri (remote URIs once published, else local paths) and `evaluation`."""
    from .pipeline import evaluate_run, export_merged
    from .remote_artifacts import is_remote, publish

    fields: dict[str, Any] = {}
    adapter, merged = outcome.adapter_dir, None if outcome.adapter_dir else outcome.model_dir
    if adapter is not None:
        if progress:
            progress.update(phase="Evaluating", force=True)
        evaluation = evaluate_run(job, layout, data, adapter, home)
        fields["evaluation"] = evaluation.model_dump(mode="json", by_alias=True, exclude_none=True)
        merged = export_merged(job, layout, adapter, home)
    uri = output_uri(job)
    if uri and is_remote(uri):
        items = {"adapter": adapter, "merged": merged, "job.yaml": layout.root / "job.yaml"}
        write_json_atomic(layout.root / "job.yaml", {"apiVersion": "tuneops.io/v1alpha1", "kind": "FineTuneJob",
                                                    "metadata": {"name": job.metadata.name},
                                                    "spec": job.spec.to_wire()})  # base model for serving
        publish(uri, {k: v for k, v in items.items() if v is not None})
        fields["adapterUri"] = f"{uri}/adapter" if adapter else None
        fields["mergedUri"] = f"{uri}/merged" if merged else None
    else:
        fields["adapterUri"] = str(adapter) if adapter else None
        fields["mergedUri"] = str(merged) if merged else None
    return fields


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneops.runtime.train", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, type=Path, help="FineTuneJob YAML")
    parser.add_argument("--output", required=True, type=Path, help="output dir (the run dir / pod volume)")
    parser.add_argument("--home", type=Path, help="TUNEOPS_HOME (models cache, local MLflow store)")
    parser.add_argument("--max-steps", type=int, help="override spec.training.maxSteps")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .training_data import prepare_training_data

    layout = RunLayout(args.output)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    progress = ProgressReporter(layout.root) if rank0 else None
    result: dict[str, Any] = {"phase": "Failed"}
    try:
        job = load_job(args.spec)
        if progress:
            progress.update(phase="Preparing", force=True)
        data = prepare_training_data(job.spec.dataset, out_dir=layout.data, base_dir=args.spec.parent,
                                     max_seq_length=job.spec.training.max_seq_length)
        outcome = train(job, run_dir=layout.root, data=data, tracking=None if args.no_tracking else "auto",
                        home=args.home, max_steps=args.max_steps, progress=progress)
        result = {"phase": "Succeeded", "reason": "TrainingComplete", "message": f"{outcome.steps} steps",
                  "metrics": outcome.metrics, "datasetHash": data.version, "mlflowRunId": outcome.mlflow_run_id,
                  "steps": outcome.steps, "totalSteps": outcome.total_steps, "resumedFrom": outcome.resumed_from,
                  "stepsThisAttempt": outcome.steps_this_attempt}
        if rank0:  # evaluation, export and upload touch files only, no collectives: rank 0 alone
            result.update(finish_outputs(job, layout, data, outcome, home=args.home, progress=progress))
        return 0
    except Exception as exc:
        log.exception("training failed")
        result = {"phase": "Failed", "reason": type(exc).__name__, "message": str(exc)[:2000]}
        return 1
    finally:
        if rank0:
            if progress:
                progress.update(phase=result["phase"], force=True)
            write_result(layout.root, {k: v for k, v in result.items() if v is not None})


if __name__ == "__main__":
    sys.exit(main())
