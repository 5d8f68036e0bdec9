"""FineTuneJob: fine-tune a base model on a dataset, evaluate it, and register the result."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import (
    API_VERSION, DNS_NAME, STORAGE_URI, Condition, EnvVar, ObjectMeta, ResourcesSpec, Rule, SecretRef,
    TuneopsModel, is_set, no_userinfo_rule, rules,
)
from .dataset import DatasetSpec
from .evaluation import EvaluationSpec
from .model_source import BaseModelSpec
from .plan import Plan

Method = Literal["lora", "qlora", "full"]


class LoraSpec(TuneopsModel):
    r: int = Field(default=16, gt=0, le=1024, description="LoRA rank.")
    alpha: int = Field(default=32, gt=0, le=4096, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=list, max_length=64,
        description="Module names to adapt; empty = the family's default; ['all-linear'] = every linear layer.")
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSpec(TuneopsModel):
    """4-bit weight quantisation for QLoRA (bitsandbytes)."""

    bits: Literal[4] = 4
    type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


@rules(
    Rule(
        cel="!has(self.warmupSteps) || self.warmupRatio == 0.0",
        message="set warmupSteps or warmupRatio, not both",
        check=lambda s: s.warmup_steps is None or s.warmup_ratio == 0.0,
        field=".warmupSteps",
    ),
)
class TrainingSpec(TuneopsModel):
    epochs: float = Field(default=1.0, gt=0, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps (wins over epochs).")
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd"] = "adamw_torch"
    batch_size: int = Field(default=4, gt=0, le=4096, description="Per-device micro-batch size.")
    gradient_accumulation_steps: int = Field(default=1, gt=0, le=4096)
    max_seq_length: int = Field(default=2048, gt=0, le=1048576, description="Tokens per sample (after chat template).")
    packing: bool = Field(default=False, description="Pack several samples into one sequence.")
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="auto: bf16 on GPUs that support it, fp32 on CPU.")
    seed: int = 42
    log_every_steps: int = Field(default=10, gt=0)
    eval_every_steps: int | None = Field(default=None, gt=0, description="Evaluate on the validation split every N steps.")
    save_every_steps: int | None = Field(default=None, gt=0, description="Checkpoint every N steps (resume point).")
    save_total_limit: int = Field(default=3, gt=0, description="Checkpoints kept.")


class DeepSpeedSpec(TuneopsModel):
    zero_stage: Literal[1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False


class FsdpSpec(TuneopsModel):
    sharding_strategy: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = "full_shard"
    cpu_offload: bool = False


@rules(
    Rule(
        cel="self.strategy != 'none' || (self.nodes == 1 && self.gpusPerNode <= 1)",
        message="strategy none runs one process: use ddp, fsdp or deepspeed for several GPUs or nodes",
        check=lambda s: s.strategy != "none" or (s.nodes == 1 and s.gpus_per_node <= 1),
        field=".strategy",
    ),
    Rule(
        cel="!has(self.deepspeed) || self.strategy == 'deepspeed'",
        message="deepspeed settings need strategy: deepspeed",
        check=lambda s: s.deepspeed is None or s.strategy == "deepspeed",
        field=".deepspeed",
    ),
    Rule(
        cel="!has(self.fsdp) || self.strategy == 'fsdp'",
        message="fsdp settings need strategy: fsdp",
        check=lambda s: s.fsdp is None or s.strategy == "fsdp",
        field=".fsdp",
    ),
    Rule(
        cel="!has(self.deepspeed) || !self.deepspeed.offloadParams || self.deepspeed.zeroStage == 3",
        message="offloadParams needs zeroStage 3",
        check=lambda s: s.deepspeed is None or not s.deepspeed.offload_params or s.deepspeed.zero_stage == 3,
        field=".deepspeed.offloadParams",
    ),
)
class DistributionSpec(TuneopsModel):
    """How training is spread: one process, DDP, FSDP or DeepSpeed ZeRO, on one or several nodes (torchrun)."""

    strategy: Literal["none", "ddp", "fsdp", "deepspeed"] = "none"
    nodes: int = Field(default=1, ge=1, le=1024)
    gpus_per_node: int = Field(default=1, ge=0, le=64, description="Processes per node (0 = CPU only).")
    deepspeed: DeepSpeedSpec | None = None
    fsdp: FsdpSpec | None = None


@rules(no_userinfo_rule("checkpoints"), no_userinfo_rule("output"))
class StorageSpec(TuneopsModel):
    """Where checkpoints and outputs go. Credentials only as a reference to a Secret."""

    checkpoints: str | None = Field(default=None, pattern=STORAGE_URI, max_length=2048,
                                    description="Checkpoint URI prefix (s3://, gs://, file:// or an absolute path).")
    output: str | None = Field(default=None, pattern=STORAGE_URI, max_length=2048,
                               description="Output URI prefix for adapters and merged models.")
    credentials_secret: SecretRef | None = Field(
        default=None, description="Secret with object-store credentials, mounted as environment variables.")
    volume_claim: str | None = Field(default=None, pattern=DNS_NAME, max_length=253,
                                     description="PVC mounted at /checkpoints for local checkpoints.")


@rules(no_userinfo_rule("mlflowUri"))
class TrackingSpec(TuneopsModel):
    mlflow_uri: str | None = Field(
        default=None, pattern=r"^(https?|file|sqlite|postgresql|mysql|databricks)://[^\s]*$|^/[^\s]*$", max_length=2048,
        description="MLflow tracking URI; unset = the operator's default (embedded: a local store).")
    experiment: str = Field(default="tuneops", min_length=1, max_length=256)
    credentials_secret: SecretRef | None = None


class OutputSpec(TuneopsModel):
    registered_model: str = Field(pattern=DNS_NAME, max_length=63,
                                  description="Name in the model registry; ModelVersions are <name>-v<N>.")
    merge_adapter: bool = Field(default=False, description="Also export base+adapter merged weights.")
    merged_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    create_model_version: bool = True


def _qlora_has_quantization(s: "FineTuneJobSpec") -> bool:
    return s.method != "qlora" or s.quantization is not None


@rules(
    Rule(
        cel="self.method != 'qlora' || has(self.quantization)",
        message="method qlora needs quantization (e.g. {bits: 4, type: nf4})",
        check=_qlora_has_quantization,
        field=".quantization",
    ),
    Rule(
        cel="self.method == 'qlora' || !has(self.quantization)",
        message="quantization applies only to method qlora",
        check=lambda s: s.method == "qlora" or s.quantization is None,
        field=".quantization",
    ),
    Rule(
        cel="self.method != 'full' || !has(self.lora)",
        message="lora settings do not apply to method full",
        check=lambda s: s.method != "full" or s.lora is None,
        field=".lora",
    ),
    Rule(
        cel="self.method != 'qlora' || !has(self.distribution) || self.distribution.strategy != 'fsdp'"
        " || self.distribution.nodes == 1",
        message="qlora with multi-node fsdp is not supported; use deepspeed or a single node",
        check=lambda s: s.method != "qlora" or s.distribution.strategy != "fsdp" or s.distribution.nodes == 1,
        field=".distribution",
    ),
)
class FineTuneJobSpec(TuneopsModel):
    base_model: BaseModelSpec
    dataset: DatasetSpec
    method: Method = "lora"
    lora: LoraSpec | None = Field(default=None, description="LoRA settings (defaults apply for lora/qlora).")
    quantization: QuantizationSpec | None = None
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    distribution: DistributionSpec = Field(default_factory=DistributionSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: str | None = Field(default=None, max_length=512, description="Training image; unset = operator default.")
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: OutputSpec
    backoff_limit: int = Field(default=3, ge=0, le=100, description="Pod restarts (resuming from checkpoints).")
    active_deadline_seconds: int | None = Field(default=None, gt=0)

    def lora_or_default(self) -> LoraSpec:
        return self.lora or LoraSpec()


# ---------------------------------------------------------------------------------------------------------
# Status

JobPhase = Literal["Pending", "Preparing", "Running", "Evaluating", "Succeeded", "Failed"]
JOB_PHASES: tuple[str, ...] = JobPhase.__args__  # type: ignore[attr-defined]


class Progress(TuneopsModel):
    step: int = Field(default=0, ge=0)
    total_steps: int | None = Field(default=None, ge=0)
    epoch: float | None = Field(default=None, ge=0)
    percent: int | None = Field(default=None, ge=0, le=100)
    eta_seconds: int | None = Field(default=None, ge=0)
    summary: str | None = Field(default=None, description="Human form for kubectl, e.g. '40% (1200/3000)'.")


class MlflowRef(TuneopsModel):
    run_id: str | None = None
    experiment_id: str | None = None
    url: str | None = None


class Attempt(TuneopsModel):
    """One training pod's run: a restart (preemption, node loss, crash, spec change) starts the next attempt."""

    n: int = Field(ge=1)
    start: datetime | None = None
    end: datetime | None = None
    reason: str | None = Field(default=None, description="Succeeded, Preempted, NodeLost, PodDeleted, Evicted, "
                               "SpecChanged, or the container's reason and exit code (e.g. OOMKilled (exit code 137)).")
    resumed_from: str | None = Field(default=None, description="Checkpoint published before this attempt started.")
    pod: str | None = None
    job: str | None = Field(default=None, description="The revision's batch/v1 Job.")


class FineTuneJobStatus(TuneopsModel):
    phase: JobPhase = "Pending"
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    progress: Progress | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow: MlflowRef | None = None
    dataset_hash: str | None = None
    last_checkpoint: str | None = None
    attempts: list[Attempt] = Field(default_factory=list, description="The latest attempts (at most 20).")
    attempt_count: int | None = Field(default=None, ge=0, description="All attempts so far, including dropped ones.")
    training_job: str | None = Field(default=None, description="Name of the batch/v1 Job running the training.")
    model_version: str | None = Field(default=None, description="The ModelVersion created on success.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    plan: Plan | None = Field(default=None, description="The preflight plan: checks, memory per GPU, "
                              "suggested GPUs (written before the training Job is created).")


class FineTuneJob(TuneopsModel):
    model_config = TuneopsModel.model_config | {"alias_generator": None}

    api_version: Literal["tuneops.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None
