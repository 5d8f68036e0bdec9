"""The preflight plan of a FineTuneJob: what `tuneops plan` prints and the operator writes to `status.plan`.

Pure data; computed by `tuneops.planning` (cheap, arithmetic checks: the operator and the CLI) and
`tuneops.runtime.preflight` (sample checks that need the tokenizer: the CLI and CPU pods).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import TuneopsModel


class PlanCheck(TuneopsModel):
    name: str = Field(max_length=64, description="What was checked, e.g. memory, lora.targetModules, chatTemplate.")
    ok: bool = Field(description="False when the check failed (a failing check stops the job).")
    skipped: bool = Field(default=False, description="Not run here; the message says why.")
    message: str = Field(default="", max_length=4096)


class MemoryEstimate(TuneopsModel):
    """Estimated peak memory of one training process (one GPU, or the CPU process), in GiB."""

    method: Literal["full", "lora", "qlora"]
    strategy: str = Field(max_length=64, description="single, ddp, deepspeed-zero2, deepspeed-zero3, "
                                                     "deepspeed-zero3-offload, fsdp, ...")
    processes: int = Field(ge=1, description="World size the estimate assumes.")
    weights_gib: float = 0.0
    trainable_gib: float = Field(default=0.0, description="Trainable parameters kept in fp32 apart from the weights.")
    gradients_gib: float = 0.0
    optimizer_gib: float = 0.0
    activations_gib: float = 0.0
    logits_gib: float = 0.0
    overhead_gib: float = 0.0
    total_gib: float = 0.0
    cpu_offload_gib: float = Field(default=0.0, description="Host memory per process taken by offloaded states.")
    selected: bool = Field(default=False, description="The spec's own method and distribution.")


class GpuSuggestion(TuneopsModel):
    gpu: str = Field(max_length=64)
    count: int = Field(ge=1, description="GPUs in total (nodes x gpusPerNode).")
    strategy: str = Field(max_length=64)
    per_gpu_gib: float
    usable_gib: float
    reason: str = Field(default="", max_length=1024)


class LengthStats(TuneopsModel):
    """Tokenised lengths (chat template applied) of a sample of the dataset."""

    sampled_rows: int = Field(ge=0)
    mean: float = 0.0
    p50: int = 0
    p95: int = 0
    max: int = 0
    truncated_percent: float = Field(default=0.0, description="Rows over training.maxSeqLength, in %.")
    packing_efficiency: float = Field(default=0.0, description="Fill of maxSeqLength rows if packed (0-1).")


class TimeEstimate(TuneopsModel):
    gpu: str = Field(max_length=64)
    processes: int = Field(ge=1)
    flops_per_token: float
    assumed_mfu: float
    tokens_per_second: float
    tokens_per_epoch: int | None = None
    seconds_per_epoch: float | None = None
    steps_per_epoch: int | None = None


class Plan(TuneopsModel):
    ok: bool = Field(description="True when no check failed.")
    model: str = Field(default="", max_length=256, description="The architecture the estimate used.")
    architecture_source: str = Field(default="", max_length=256, description="config.json, or the built-in table.")
    device: Literal["cuda", "cpu"] = "cuda"
    parameters: int | None = Field(default=None, ge=0)
    trainable_parameters: int | None = Field(default=None, ge=0)
    checks: list[PlanCheck] = Field(default_factory=list, max_length=64)
    memory: list[MemoryEstimate] = Field(default_factory=list, max_length=64)
    suggestion: GpuSuggestion | None = None
    lengths: LengthStats | None = None
    time: TimeEstimate | None = None

    def failed(self) -> list[PlanCheck]:
        return [c for c in self.checks if not c.ok]

    def selected(self) -> MemoryEstimate | None:
        return next((m for m in self.memory if m.selected), None)
