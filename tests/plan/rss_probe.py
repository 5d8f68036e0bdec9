"""Measure the peak RSS growth of a short real SmolLM2 training run, in a fresh process, and print it with
the estimator's CPU prediction for the exact same config as one JSON line.

    python -m tests.plan.rss_probe '{"method": "lora", "gradientCheckpointing": false}' RUN_DIR

Baseline = resident memory after the ML stack is imported, the data prepared and the tokenizer loaded (what
`tuneops.planning.planner.CPU_BASELINE_GIB` covers); peak = VmHWM at the end. Growth = peak - baseline is
what the estimator predicts: weights, adapter, gradients, optimizer states, activations, logits.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    # VmHWM is this process image's own high-water mark. Not ru_maxrss: Linux keeps that across fork + exec,
    # so a probe started from a large pytest process would report the parent's resident size as its peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(config: dict, run_dir: Path) -> dict:
    # Everything the trainer imports comes before the baseline (CPU_BASELINE_GIB covers it, not the estimate).
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    import trl  # noqa: F401
    try:
        import deepspeed  # noqa: F401 - accelerate imports it when the Trainer is built, if installed
    except Exception:  # noqa: BLE001 - absent or unusable here: then the trainer does not load it either
        pass

    from tests.support.smollm2 import shared_home
    from tests.train.helpers import parse_job, small_job
    from tuneops.planning import estimate, from_config, setup_from_spec
    from tuneops.runtime.models import load_tokenizer, resolve_model_dir
    from tuneops.runtime.preflight import length_stats
    from tuneops.runtime.train import train
    from tuneops.runtime.training_data import load_rows, prepare_training_data

    torch.set_num_threads(int(config.get("threads", 2)))
    training = {"maxSteps": config.get("steps", 8), "gradientCheckpointing": config.get("gradientCheckpointing", False),
                "batchSize": config.get("batchSize", 4), "logEverySteps": 4}
    doc = small_job(**training)
    doc["spec"]["dataset"]["split"] = {"validation": 0.0, "seed": 42}  # no evaluation passes: training only
    method = config.get("method", "lora")
    doc["spec"]["method"] = method
    if method == "qlora":
        doc["spec"]["quantization"] = {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "float32"}
    if method == "full":
        doc["spec"].pop("lora", None)
    job = parse_job(doc)
    home = shared_home()
    data = prepare_training_data(job.spec.dataset, out_dir=run_dir / "data")
    tokenizer = load_tokenizer(job.spec.base_model, home=home)
    rows = load_rows(data.train_path)
    texts = tokenizer.apply_chat_template([r["messages"] for r in rows], tokenize=False)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    stats = length_stats(lengths, job.spec.training.max_seq_length)

    # Record the tokens of every micro-batch the trainer really runs (padding-free: one flat row each).
    seen: list[tuple[int, int]] = []  # (tokens, labelled tokens) per micro-batch
    trainers: set[str] = set()
    original = trl.SFTTrainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        seen.append((int(inputs["input_ids"].numel()), int((inputs["labels"] != -100).sum())))
        trainers.add(type(self).__name__)
        return original(self, model, inputs, *args, **kwargs)

    trl.SFTTrainer.training_step = training_step
    baseline = rss_bytes()
    started = time.perf_counter()
    result = train(job, run_dir=run_dir, data=data, tracking=None, home=home, disable_tqdm=True)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()

    model_dir = resolve_model_dir(job.spec.base_model, home=home)
    arch = from_config(json.loads((model_dir / "config.json").read_text()), name="SmolLM2-135M")
    # The exact config: the largest micro-batch that ran (the planner itself assumes batch x longest sample,
    # an upper bound, reported as plannerGiB).
    tokens, labels = max(seen)
    exact = replace(setup_from_spec(job.spec, device="cpu"), batch_size=1, seq_len=tokens,
                    label_tokens=max(n for _, n in seen))
    est = estimate(arch, exact)
    planner = estimate(arch, setup_from_spec(job.spec, device="cpu", seq_len=stats.max))
    return {"config": config, "baselineGiB": baseline / 2**30, "peakGiB": peak / 2**30,
            "measuredGrowthGiB": (peak - baseline) / 2**30, "estimatedGiB": est.total_gib,
            "plannerGiB": planner.total_gib, "microBatchTokens": seen, "trainer": sorted(trainers),
            "estimate": est.model_dump(by_alias=True), "lengths": stats.model_dump(by_alias=True),
            "steps": result.steps, "trainSeconds": seconds,
            "tokensPerSecond": result.metrics.get("train_tokens_per_second")}


if __name__ == "__main__":
    out = main(json.loads(sys.argv[1]), Path(sys.argv[2]))
    print("RSS_PROBE " + json.dumps(out))
