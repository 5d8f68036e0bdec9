"""Tokens per second and time per epoch from FLOPs per token and an assumed model-FLOPs utilisation.

    flops/token = k * N + attention,  k = 6 full (2N forward + 4N backward), 4 LoRA/QLoRA (the frozen weights
                  need no weight gradient: 2N forward + 2N backward for the input gradients), +2 with
                  gradient checkpointing (the forward runs twice);
    attention    = 6 * layers * q_dim * seq (causal QK^T and AV, forward + backward);
    tokens/s     = processes * peak_tflops * MFU / flops per token.

MFU assumptions (typical for HF Trainer + sdpa on one node): 0.35 bf16 full/LoRA, 0.20 QLoRA (the NF4
dequantisation per matmul costs), 0.6x of that across nodes. CPU: the measured effective rate CPU_TFLOPS.
"""

from __future__ import annotations

from tuneops.api.plan import TimeEstimate

from .architectures import Architecture
from .gpus import Gpu
from .memory import Setup, trainable_params

MFU = {"full": 0.35, "lora": 0.35, "qlora": 0.20}
MULTI_NODE_FACTOR = 0.6
# Effective fp32 training rate on CPU, measured: SmolLM2-135M LoRA trains at ~150 tokens/s on 2 idle cores
# (bench/RESULTS.md) at 5.8e8 FLOPs/token -> ~0.09 TFLOPS.
CPU_TFLOPS = 0.09
CPU_MFU = 1.0       # CPU_TFLOPS is already an effective rate


def flops_per_token(arch: Architecture, s: Setup, mean_len: float | None = None) -> float:
    n = arch.total_params()
    k = 6 if s.method == "full" else 4
    if s.gradient_checkpointing:
        k += 2
    adapters = 6 * trainable_params(arch, s) if s.method != "full" else 0
    attention = 6 * arch.num_hidden_layers * arch.q_dim * (mean_len or s.seq_len)
    return k * n + adapters + attention


def time_estimate(arch: Architecture, s: Setup, gpu: Gpu | None, *, tokens_per_epoch: int | None,
                  samples_per_epoch: int | None, nodes: int = 1, mean_len: float | None = None,
                  grad_accum: int = 1) -> TimeEstimate:
    fpt = flops_per_token(arch, s, mean_len)
    if gpu is None or s.device == "cpu":
        name, peak, mfu = "cpu", CPU_TFLOPS, CPU_MFU
    else:
        name, peak = gpu.name, gpu.peak_tflops
        mfu = MFU[s.method] * (MULTI_NODE_FACTOR if nodes > 1 else 1.0)
    rate = max(1, s.processes) * peak * 1e12 * mfu / fpt
    seconds = tokens_per_epoch / rate if tokens_per_epoch else None
    steps = None
    if samples_per_epoch:
        per_step = s.batch_size * grad_accum * max(1, s.processes)
        steps = max(1, -(-samples_per_epoch // per_step))
    return TimeEstimate(gpu=name, processes=max(1, s.processes), flops_per_token=float(f"{fpt:.4g}"),
                        assumed_mfu=mfu, tokens_per_second=round(rate, 1), tokens_per_epoch=tokens_per_epoch,
                        seconds_per_epoch=round(seconds, 1) if seconds is not None else None,
                        steps_per_epoch=steps)
