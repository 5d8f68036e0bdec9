"""`tuneops plan FILE`: the preflight of a FineTuneJob before any GPU is spent.

Memory per GPU for full / LoRA / QLoRA and each distribution choice, a suggested GPU type and count, time
per epoch, and the sample checks (dataset schema, chat template, token lengths, LoRA target modules).
Exits 1 when a check fails (the failing checks are printed), 2 when the file is not a valid FineTuneJob.
"""

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="preflight a FineTuneJob: memory, GPU suggestion, time, sample checks")
    p.add_argument("file", metavar="FILE", help="FineTuneJob YAML")
    p.add_argument("--output", "-o", choices=["table", "json", "yaml"], default="table")
    p.add_argument("--device", choices=["cuda", "cpu"],
                   help="estimate for this device (default: cuda when resources.gpu.count > 0, else cpu)")
    p.add_argument("--home", metavar="DIR", help="TUNEOPS_HOME (models cache; default: $TUNEOPS_HOME or ./.tuneops)")
    p.add_argument("--sample", type=int, default=256, metavar="N", help="dataset rows to sample (default 256)")
    p.add_argument("--read-remote", action="store_true", help="also sample a remote dataset (s3://, gs://, ...)")
    p.add_argument("--no-sample", action="store_true",
                   help="only the cheap checks the operator runs (built-in architecture table, no tokenizer)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        from tuneops.manifests import load_finetunejob

        job = load_finetunejob(args.file)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.no_sample:
        from tuneops.planning import plan_job

        plan = plan_job(job.spec, device=args.device)
    else:
        from tuneops.runtime.preflight import preflight

        plan = preflight(job, base_dir=Path(args.file).resolve().parent, home=args.home, device=args.device,
                         sample_rows=args.sample, read_remote=args.read_remote)
    if args.output == "json":
        print(plan.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(plan.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False), end="")
    else:
        print(format_plan(job, plan))
    if not plan.ok:
        for c in plan.failed():
            print(f"preflight failed: {c.name}: {c.message}", file=sys.stderr)
        return 1
    return 0


def format_plan(job, plan) -> str:
    spec = job.spec
    lines = [f"FineTuneJob {job.metadata.name}: {spec.method} of {plan.model or spec.base_model.family}"
             + (f" ({plan.architecture_source})" if plan.architecture_source else "")]
    if plan.parameters:
        lines.append(f"  {plan.parameters / 1e6:,.1f}M parameters, {plan.trainable_parameters / 1e6:,.2f}M trainable; "
                     f"estimates for {plan.device}")
    lines += ["", f"{'CHECK':<20} {'RESULT':<8} MESSAGE"]
    for c in plan.checks:
        result = "skipped" if c.skipped else ("ok" if c.ok else "FAILED")
        lines.append(f"{c.name:<20} {result:<8} {c.message}")
    if plan.memory:
        unit = "GPU" if plan.device == "cuda" else "process"
        lines += ["", f"MEMORY PER {unit.upper()} (GiB; * = this spec)",
                  f"  {'method':<6} {'strategy':<24} {'n':>2} {'weights':>8} {'adapter':>8} {'grads':>7} {'optim':>7} "
                  f"{'activ':>7} {'logits':>7} {'overhd':>7} {'TOTAL':>7} {'offload':>8}"]
        for m in plan.memory:
            lines.append(f"{'*' if m.selected else ' '} {m.method:<6} {m.strategy:<24} {m.processes:>2} "
                         f"{m.weights_gib:>8.2f} {m.trainable_gib:>8.2f} {m.gradients_gib:>7.2f} {m.optimizer_gib:>7.2f} "
                         f"{m.activations_gib:>7.2f} {m.logits_gib:>7.2f} {m.overhead_gib:>7.2f} {m.total_gib:>7.2f} "
                         f"{m.cpu_offload_gib:>8.2f}")
    if plan.suggestion:
        s = plan.suggestion
        lines += ["", f"suggested: {s.count} x {s.gpu} with {s.strategy}: {s.per_gpu_gib:.1f} of {s.usable_gib:.1f} "
                      f"GiB usable per GPU ({s.reason})"]
    if plan.lengths and plan.lengths.sampled_rows:
        n = plan.lengths
        lines.append(f"lengths ({n.sampled_rows} rows): mean {n.mean:.0f}, p50 {n.p50}, p95 {n.p95}, max {n.max} tokens; "
                     f"{n.truncated_percent:.1f}% over maxSeqLength; packing efficiency {n.packing_efficiency:.0%}")
    if plan.time:
        t = plan.time
        text = (f"throughput: ~{t.tokens_per_second:,.0f} tokens/s on {t.processes} x {t.gpu} "
                f"({t.flops_per_token:.3g} FLOPs/token, assumed MFU {t.assumed_mfu:.2f})")
        if t.seconds_per_epoch is not None:
            text += f"; ~{t.tokens_per_epoch:,} tokens/epoch -> {_duration(t.seconds_per_epoch)} per epoch"
            if t.steps_per_epoch:
                text += f", {t.steps_per_epoch} steps"
        else:
            text += f"; {_duration(1e6 / t.tokens_per_second)} per million tokens (dataset size unknown here)"
        lines.append(text)
    lines += ["", "preflight: " + ("OK" if plan.ok else "FAILED (" + ", ".join(c.name for c in plan.failed()) + ")")]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
