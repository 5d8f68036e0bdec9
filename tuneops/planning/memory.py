"""Peak training memory per process (one GPU, or the CPU process) for full / LoRA / QLoRA and each
distribution choice. Pure arithmetic on the architecture; the formulas are in docs/preflight.md.

What tuneops' trainer actually does decides the byte counts (tuneops.runtime.train):
- weights load in the family dtype (bf16) on GPUs and in fp32 on CPU;
- LoRA adapters are fp32 (peft upcasts adapter weights), so their gradient and AdamW m+v are fp32 too;
- QLoRA: decoder Linears are NF4 (0.5 byte/param + one absmax per 64-value block: fp32, or with double
  quantisation 8-bit plus one fp32 per 256 blocks); everything else (embeddings, head, norms) is upcast to
  fp32 by peft's prepare_model_for_kbit_training;
- full fine-tuning: torch AdamW keeps m and v in the parameter dtype (bf16 weights -> 8 bytes/param with
  gradients); DeepSpeed keeps an fp32 master copy + fp32 m+v (12 bytes) next to bf16 weights and gradients;
  FSDP through accelerate upcasts parameters to fp32 (4 + 4 + 8 bytes);
- activations per token per layer of a Llama-style block (what autograd saves): norm inputs/outputs 4h, q and
  attention output 2*q_dim, k and v 2*kv_dim, MLP gate/up/silu/product 4*I; LoRA dropout > 0 adds a dropped
  copy (plus a 1-byte mask) of each adapted module's input; gradient checkpointing keeps only each layer's
  input (h) and recomputes one layer at a time; memory-efficient attention (sdpa/flash) saves no s^2 scores;
- LM head: TRL's fused head never materialises the logits (it scores 4096 x 32768 tiles); on CPU tuneops'
  head keeps fp32 logits, log-softmax and gradient of the labelled positions (12 bytes x labels x vocab).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tuneops.api.plan import MemoryEstimate

from .architectures import DECODER_LINEAR, Architecture, lora_params, resolve_targets

GIB = float(1 << 30)
NF4_BYTES = 0.5
NF4_BLOCK = 64
DQ_BLOCK = 256  # double quantisation: absmax blocks per second-level fp32 constant
CUDA_CONTEXT_GIB = 0.75       # CUDA context, cuBLAS workspaces, NCCL buffers (observed 0.5-1 GiB)
CUDA_FRAGMENTATION = 0.05     # caching-allocator slack on top of live tensors
# Families tuneops trains with eager attention (tuneops.runtime.models.FAMILIES: Gemma's logit soft-capping).
EAGER_ATTENTION_FAMILIES = frozenset({"gemma2", "gemma3"})


@dataclass(frozen=True)
class Setup:
    """The training choices the estimate depends on (see `setup_from_spec`)."""

    method: str = "lora"                       # full | lora | qlora
    lora_r: int = 16
    lora_targets: tuple[str, ...] = DECODER_LINEAR
    lora_dropout: float = 0.05
    double_quant: bool = True
    batch_size: int = 4
    seq_len: int = 2048                        # tokens per sample in the worst micro-batch
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"
    device: str = "cuda"                       # cuda | cpu
    strategy: str = "none"                     # none | ddp | fsdp | deepspeed
    processes: int = 1                         # world size
    gpus_per_node: int = 1
    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    fsdp_sharding: str = "full_shard"
    fsdp_cpu_offload: bool = False
    packing: bool = False                      # rows of seq_len tokens; else padding-free: one flat row
    eager_attention: bool = False              # attention scores materialised (no sdpa/flash kernel)
    label_tokens: int | None = None            # labelled (completion) tokens per micro-batch; None = all

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def label(self) -> str:
        if self.strategy == "none":
            return "single"
        if self.strategy == "deepspeed":
            off = "-offload" if (self.offload_optimizer or self.offload_params) else ""
            return f"deepspeed-zero{self.zero_stage}{off}"
        if self.strategy == "fsdp":
            return "fsdp" + ("" if self.fsdp_sharding == "full_shard" else f"-{self.fsdp_sharding}") \
                + ("-offload" if self.fsdp_cpu_offload else "")
        return self.strategy


def setup_from_spec(spec, *, device: str | None = None, seq_len: int | None = None) -> Setup:
    """A Setup from a FineTuneJobSpec (device: cuda when the pod asks for GPUs, else cpu)."""
    t, d = spec.training, spec.distribution
    lora = spec.lora_or_default()
    world = max(1, d.nodes * max(1, d.gpus_per_node))
    return Setup(
        method=spec.method, lora_r=lora.r, lora_targets=tuple(lora.target_modules or DECODER_LINEAR),
        lora_dropout=lora.dropout, double_quant=bool(spec.quantization and spec.quantization.double_quant),
        batch_size=t.batch_size, seq_len=min(seq_len or t.max_seq_length, t.max_seq_length),
        gradient_checkpointing=t.gradient_checkpointing, optimizer=t.optimizer,
        device=device or ("cuda" if spec.resources.gpu.count > 0 else "cpu"),
        strategy=d.strategy, processes=world, gpus_per_node=max(1, d.gpus_per_node),
        zero_stage=d.deepspeed.zero_stage if d.deepspeed else 2,
        offload_optimizer=bool(d.deepspeed and d.deepspeed.offload_optimizer),
        offload_params=bool(d.deepspeed and d.deepspeed.offload_params),
        fsdp_sharding=d.fsdp.sharding_strategy if d.fsdp else "full_shard",
        fsdp_cpu_offload=bool(d.fsdp and d.fsdp.cpu_offload),
        packing=t.packing, eager_attention=spec.base_model.family in EAGER_ATTENTION_FAMILIES,
    )


def weight_bytes(arch: Architecture, s: Setup) -> float:
    """The (frozen or trained) model weights as loaded."""
    dtype = 2 if s.device == "cuda" else 4
    if s.method != "qlora":
        return arch.total_params() * dtype
    linear = arch.num_hidden_layers * arch.layer_linear_params()
    constants = (1 / NF4_BLOCK + 4 / (NF4_BLOCK * DQ_BLOCK)) if s.double_quant else 4 / NF4_BLOCK
    rest = arch.total_params() - linear  # embeddings, head, norms: fp32 after prepare_model_for_kbit_training
    return linear * (NF4_BYTES + constants) + rest * 4


def trainable_params(arch: Architecture, s: Setup) -> int:
    if s.method == "full":
        return arch.total_params()
    return lora_params(arch, s.lora_targets, s.lora_r)


def _optimizer_bytes_per_param(s: Setup, param_bytes: int) -> float:
    if s.optimizer == "sgd":
        return 0.0
    if "8bit" in s.optimizer:
        return 2.0  # m and v quantised to one byte each (block constants are negligible)
    return 2.0 * param_bytes


def activation_bytes_per_token(arch: Architecture, s: Setup) -> float:
    """What autograd keeps per token for the whole stack (excluding logits)."""
    act = 2 if s.device == "cuda" else 4
    h, i = arch.hidden_size, arch.intermediate_size
    extra_norms = (arch.norms_per_layer - 2) * 2 * h
    layer = (4 * h + 2 * arch.q_dim + 2 * arch.kv_dim + 4 * i + extra_norms) * act
    if s.method != "full" and s.lora_dropout > 0:
        shapes = arch.linear_shapes()
        dropped = sum(shapes[t][0] for t in resolve_targets(s.lora_targets) if t in shapes)
        layer += dropped * (act + 1)  # the dropped copy + its bool mask
    if s.gradient_checkpointing:
        return arch.num_hidden_layers * h * act + layer  # layer inputs + one layer recomputed
    return arch.num_hidden_layers * layer


def attention_score_bytes(arch: Architecture, s: Setup) -> float:
    """Eager attention keeps the scores and their softmax (heads x len^2 per row per layer). Padding-free
    batches are one flat row of batch x seq tokens (a block-diagonal mask), packed ones batch rows of seq."""
    if not s.eager_attention:
        return 0.0
    act = 2 if s.device == "cuda" else 4
    rows, length = (s.batch_size, s.seq_len) if s.packing else (1, s.tokens)
    layers = 1 if s.gradient_checkpointing else arch.num_hidden_layers
    return 2.0 * layers * arch.num_attention_heads * rows * length * length * act


# TRL's fused LM head scores [4096 tokens x 32768 vocab] tiles and never materialises the logits.
HEAD_TOKEN_TILE, HEAD_VOCAB_TILE = 4096, 32768
# tuneops' CPU head (runtime/sft_speed.py) materialises fp32 logits, log-softmax and gradient of the labelled
# positions only, up to this many bytes; above it, TRL's tiled head runs.
CPU_COMPACT_LOGITS_BUDGET = 1 << 30


def logits_bytes(arch: Architecture, s: Setup) -> float:
    """The LM head's transient memory: tiles on GPUs; on CPU 12 bytes x labelled tokens x vocab when that
    fits the compact-head budget (labels default to every token: an upper bound), else tiles."""
    act = 2 if s.device == "cuda" else 4
    tiles = 2.0 * min(s.tokens, HEAD_TOKEN_TILE) * min(arch.vocab_size, HEAD_VOCAB_TILE) * act
    if s.device == "cuda":
        return tiles
    compact = 12.0 * (s.label_tokens or s.tokens) * arch.vocab_size
    return compact if compact <= CPU_COMPACT_LOGITS_BUDGET else tiles


def estimate(arch: Architecture, s: Setup) -> MemoryEstimate:
    """Peak memory of one process for `s` (GiB)."""
    world = max(1, s.processes)
    weights = weight_bytes(arch, s)
    n_train = trainable_params(arch, s)
    compute_bytes = 2 if s.device == "cuda" else 4
    trainable = grads = optim = offload = 0.0
    if s.method == "full":
        if s.strategy == "deepspeed":
            # bf16 weights and grads + fp32 master, m, v (12 bytes) on the optimizer side
            grads = n_train * compute_bytes
            optim = n_train * (4 + _optimizer_bytes_per_param(s, 4)) if s.optimizer != "sgd" else n_train * 4
        elif s.strategy == "fsdp" and s.device == "cuda":
            weights = n_train * 4  # accelerate upcasts to fp32 under FSDP mixed precision
            grads = n_train * 4
            optim = n_train * _optimizer_bytes_per_param(s, 4)
        else:
            grads = n_train * compute_bytes
            optim = n_train * _optimizer_bytes_per_param(s, compute_bytes)
    else:
        trainable = n_train * 4  # fp32 adapters
        grads = n_train * 4
        optim = n_train * _optimizer_bytes_per_param(s, 4)
        if s.strategy == "deepspeed" and s.optimizer != "sgd":
            optim += n_train * 4  # fp32 master copy

    # Sharding and offload.
    if s.strategy == "ddp" or (s.strategy == "fsdp" and s.fsdp_sharding == "no_shard"):
        grads *= 2  # DDP's gradient buckets are a second copy of the gradients
    elif s.strategy == "deepspeed":
        optim /= world
        if s.zero_stage >= 2:
            grads /= world
        if s.zero_stage == 3:
            weights, trainable = weights / world, trainable / world
            weights += 2 * (weight_bytes(arch, s) / max(1, arch.num_hidden_layers))  # gathered + prefetched layer
        if s.offload_optimizer:
            offload += optim + (grads if s.zero_stage >= 2 else 0)
            optim = 0.0
            grads = grads if s.zero_stage < 2 else 0.0
        if s.offload_params and s.zero_stage == 3:
            offload += weights
            weights = 2 * (weight_bytes(arch, s) / max(1, arch.num_hidden_layers))
    elif s.strategy == "fsdp":
        shard = s.gpus_per_node if s.fsdp_sharding == "hybrid_shard" else world
        unit = 2 * (weights / max(1, arch.num_hidden_layers))  # one decoder layer gathered + the next prefetched
        grads, optim = grads / shard, optim / shard
        if s.fsdp_sharding in ("full_shard", "hybrid_shard"):
            weights, trainable = weights / shard + unit, trainable / shard
        if s.fsdp_cpu_offload:
            offload += weights - unit + trainable + grads + optim
            weights, trainable, grads, optim = unit, 0.0, 0.0, 0.0

    activations = activation_bytes_per_token(arch, s) * s.tokens + attention_score_bytes(arch, s)
    logits = logits_bytes(arch, s)
    live = weights + trainable + grads + optim + activations + logits
    overhead = (CUDA_CONTEXT_GIB * GIB + CUDA_FRAGMENTATION * live) if s.device == "cuda" else 0.0
    return MemoryEstimate(
        method=s.method, strategy=s.label, processes=world,
        weights_gib=_gib(weights), trainable_gib=_gib(trainable), gradients_gib=_gib(grads),
        optimizer_gib=_gib(optim), activations_gib=_gib(activations), logits_gib=_gib(logits),
        overhead_gib=_gib(overhead), total_gib=_gib(live + overhead), cpu_offload_gib=_gib(offload))


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def strategy_grid(base: Setup, world: int) -> list[Setup]:
    """The distribution choices to compare for one method: single GPU, then at `world` processes DDP,
    ZeRO-2, ZeRO-3, ZeRO-3 with CPU offload, and FSDP full-shard."""
    w = max(2, world)
    single = replace(base, strategy="none", processes=1, gpus_per_node=1)
    multi = replace(base, processes=w, gpus_per_node=min(w, base.gpus_per_node) if base.processes > 1 else w)
    return [
        single,
        replace(multi, strategy="ddp"),
        replace(multi, strategy="deepspeed", zero_stage=2, offload_optimizer=False, offload_params=False),
        replace(multi, strategy="deepspeed", zero_stage=3, offload_optimizer=False, offload_params=False),
        replace(multi, strategy="deepspeed", zero_stage=3, offload_optimizer=True, offload_params=True),
        replace(multi, strategy="fsdp", fsdp_sharding="full_shard", fsdp_cpu_offload=False),
    ]


def grid(arch: Architecture, spec_setup: Setup) -> list[MemoryEstimate]:
    """Every method x distribution choice, the spec's own marked `selected`."""
    out: list[MemoryEstimate] = []
    for method in ("full", "lora", "qlora"):
        base = replace(spec_setup, method=method)
        for s in strategy_grid(base, spec_setup.processes):
            out.append(estimate(arch, s))
    own = estimate(arch, spec_setup).model_copy(update={"selected": True})
    for i, m in enumerate(out):
        if (m.method, m.strategy, m.processes) == (own.method, own.strategy, own.processes):
            out[i] = own
            break
    else:
        out.insert(0, own)
    return out


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / max(1, b)))
