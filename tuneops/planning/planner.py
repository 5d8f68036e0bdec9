"""The cheap preflight: architecture, LoRA targets, memory vs the requested resources, a GPU suggestion and
the time per epoch. Pure (stdlib + tuneops.api): the operator runs it in-process before creating the
training Job; `tuneops plan` adds the sample checks of tuneops.runtime.preflight on top.
"""

from __future__ import annotations

import re
from dataclasses import replace

from tuneops.api.plan import GpuSuggestion, LengthStats, MemoryEstimate, Plan, PlanCheck

from .architectures import DECODER_LINEAR, Architecture, lookup, unknown_targets
from .gpus import GPUS, Gpu, find_gpu
from .memory import Setup, estimate, grid, setup_from_spec, trainable_params
from .throughput import time_estimate

# Python + torch + transformers + the tokenizer before the model loads: a CPU pod's memory limit must hold
# this on top of the estimate (measured ~0.9 GiB RSS after imports on CPython 3.11 / torch 2.x).
CPU_BASELINE_GIB = 1.0
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_gib(text: str) -> float:
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)] / 2**30


def model_id(spec) -> str | None:
    src = spec.base_model.source
    return src.hf or src.packaged


def builtin_architecture(spec) -> Architecture | None:
    return lookup(model_id(spec))


def check(name: str, ok: bool, message: str, skipped: bool = False) -> PlanCheck:
    return PlanCheck(name=name, ok=ok, message=message, skipped=skipped)


def target_check(spec, arch: Architecture | None) -> PlanCheck | None:
    if spec.method == "full":
        return None
    targets = spec.lora_or_default().target_modules
    if not targets:
        return check("lora.targetModules", True, "the family's defaults: " + ", ".join(DECODER_LINEAR))
    if arch is None:
        return check("lora.targetModules", True, "architecture unknown here; checked against config.json in the pod",
                     skipped=True)
    bad = unknown_targets(arch, targets)
    if bad:
        return check("lora.targetModules", False,
                     f"lora.targetModules: {', '.join(repr(b) for b in bad)} not found in {arch.name}; "
                     f"available: {', '.join(arch.module_names())} (or all-linear)")
    return check("lora.targetModules", True, ", ".join(targets) + f" found in {arch.name}")


def suggest(arch: Architecture, s: Setup) -> GpuSuggestion | None:
    """The cheapest table GPU the spec's own setup fits on; else the fewest GPUs with DeepSpeed ZeRO-3."""
    own = replace(s, device="cuda")
    for gpu in GPUS:
        est = estimate(arch, own)
        if est.total_gib <= gpu.usable_gib:
            return GpuSuggestion(gpu=gpu.name, count=own.processes, strategy=own.label, per_gpu_gib=est.total_gib,
                                 usable_gib=gpu.usable_gib, reason="cheapest GPU the spec's own setup fits on")
    for count in (2, 4, 8, 16):
        for gpu in GPUS:
            zero3 = replace(own, strategy="deepspeed", zero_stage=3, processes=count, gpus_per_node=min(count, 8),
                            offload_optimizer=False, offload_params=False)
            est = estimate(arch, zero3)
            if est.total_gib <= gpu.usable_gib:
                return GpuSuggestion(gpu=gpu.name, count=count, strategy=zero3.label, per_gpu_gib=est.total_gib,
                                     usable_gib=gpu.usable_gib,
                                     reason="the spec's setup fits no single GPU; ZeRO-3 shards weights and states")
    return None


def smaller_batch(arch: Architecture, s: Setup, gpu: Gpu) -> tuple[int, int] | None:
    """(batchSize, gradientAccumulationSteps) with the same effective batch that fits `gpu`, if any."""
    batch, accum = s.batch_size, 1
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        if estimate(arch, replace(s, batch_size=batch)).total_gib <= gpu.usable_gib:
            return batch, accum
    return None


def memory_check(spec, selected: MemoryEstimate, device: str, suggestion: GpuSuggestion | None,
                 gpu: Gpu | None, smaller: tuple[int, int] | None = None) -> PlanCheck:
    batch_hint = (f"; or training.batchSize {smaller[0]} with gradientAccumulationSteps "
                  f"{spec.training.gradient_accumulation_steps * smaller[1]} (same effective batch)") if smaller else ""
    hint = (f"; fits: {suggestion.count} x {suggestion.gpu} with {suggestion.strategy} "
            f"({suggestion.per_gpu_gib:.1f} GiB per GPU)") if suggestion else (
        f"; no GPU in the table fits: activations + logits alone are "
        f"{selected.activations_gib + selected.logits_gib:.1f} GiB per process (sharding does not split them; "
        "use training.gradientCheckpointing, a smaller batchSize or maxSeqLength)")
    res = spec.resources
    if device == "cuda":
        if res.gpu.count == 0:
            return check("memory", True, f"estimated {selected.total_gib:.1f} GiB per GPU; the spec requests no "
                         f"GPU (resources.gpu.count 0){hint}", skipped=True)
        if gpu is None:
            return check("memory", True, f"estimated {selected.total_gib:.1f} GiB per GPU; resources.gpu.product "
                         f"{res.gpu.product or '(unset)'} is not in the GPU table, so it is not compared{hint}",
                         skipped=True)
        if selected.total_gib > gpu.usable_gib:
            return check("memory", False,
                         f"estimated {selected.total_gib:.1f} GiB per GPU ({selected.method}, {selected.strategy}, "
                         f"{selected.processes} process(es)) > {gpu.usable_gib:.1f} GiB usable on "
                         f"resources.gpu.product {res.gpu.product} ({gpu.name}){hint}{batch_hint}")
        return check("memory", True, f"estimated {selected.total_gib:.1f} GiB per GPU <= {gpu.usable_gib:.1f} GiB "
                     f"usable on {gpu.name}")
    need = selected.total_gib + CPU_BASELINE_GIB
    if not res.memory:
        return check("memory", True, f"estimated {need:.1f} GiB for the CPU process (incl. {CPU_BASELINE_GIB:.1f} "
                     "GiB runtime); resources.memory is unset, so it is not compared", skipped=True)
    limit = quantity_gib(res.memory)
    if need > limit:
        return check("memory", False, f"estimated {need:.1f} GiB for the CPU process > resources.memory "
                     f"{res.memory} ({limit:.1f} GiB)")
    return check("memory", True, f"estimated {need:.1f} GiB for the CPU process <= resources.memory {res.memory}")


def plan_job(spec, *, arch: Architecture | None = None, device: str | None = None,
             lengths: LengthStats | None = None, train_rows: int | None = None,
             extra_checks: list[PlanCheck] | tuple[PlanCheck, ...] = ()) -> Plan:
    """The plan for a FineTuneJobSpec. `arch` defaults to the built-in table entry of the source;
    `lengths`/`train_rows` (from a dataset sample) refine the activations and give the time per epoch."""
    device = device or ("cuda" if spec.resources.gpu.count > 0 else "cpu")
    arch = arch or builtin_architecture(spec)
    checks: list[PlanCheck] = []
    if arch is None:
        checks.append(check("architecture", True, f"{model_id(spec) or spec.base_model.source.path} is not in "
                            "the built-in table; config.json is read where the model is", skipped=True))
        checks.extend(extra_checks)
        return Plan(ok=all(c.ok for c in checks), device=device, checks=checks, lengths=lengths)
    checks.append(check("architecture", True, f"{arch.name} ({arch.source}): {arch.total_params() / 1e6:,.0f}M "
                        f"params, {arch.num_hidden_layers} layers, hidden {arch.hidden_size}"))
    targets = target_check(spec, arch)
    if targets:
        checks.append(targets)
    seq = spec.training.max_seq_length if (spec.training.packing or lengths is None or not lengths.max) \
        else min(lengths.max, spec.training.max_seq_length)
    s = setup_from_spec(spec, device=device, seq_len=seq)
    bad = set(unknown_targets(arch, s.lora_targets)) if s.method != "full" else set()
    if bad:  # estimate what would be adapted; the failing check says the rest
        s = replace(s, lora_targets=tuple(t for t in s.lora_targets if t not in bad))
    memory = grid(arch, s)
    selected = next(m for m in memory if m.selected)
    gpu = find_gpu(spec.resources.gpu.product) if device == "cuda" else None
    suggestion = suggest(arch, s)
    smaller = smaller_batch(arch, s, gpu) if gpu and selected.total_gib > gpu.usable_gib else None
    checks.append(memory_check(spec, selected, device, suggestion, gpu, smaller))
    checks.extend(extra_checks)
    tokens = round(lengths.mean * train_rows) if (lengths and lengths.sampled_rows and train_rows) else None
    time_gpu = gpu or (find_gpu(suggestion.gpu) if suggestion and device == "cuda" else None)
    time_setup = s if (gpu or not suggestion or device == "cpu") else replace(s, processes=suggestion.count)
    time = time_estimate(arch, time_setup, time_gpu, tokens_per_epoch=tokens, samples_per_epoch=train_rows,
                         nodes=spec.distribution.nodes, mean_len=lengths.mean if lengths and lengths.sampled_rows else None,
                         grad_accum=spec.training.gradient_accumulation_steps)
    return Plan(ok=all(c.ok for c in checks), model=arch.name, architecture_source=arch.source, device=device,
                parameters=arch.total_params(), trainable_parameters=trainable_params(arch, s), checks=checks,
                memory=memory, suggestion=suggestion, lengths=lengths, time=time)


def failure_message(plan: Plan) -> str:
    return "; ".join(f"{c.name}: {c.message}" if not c.message.startswith(c.name) else c.message
                     for c in plan.failed())
