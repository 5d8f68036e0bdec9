"""The three kinds: names, short names and the columns `kubectl get` shows."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from .base import GROUP
from .finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from .modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0  # 1 = only with `kubectl get -o wide`


AGE = Column("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    model: type[BaseModel]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[Column, ...]
    immutable_spec: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


FINETUNEJOB = Kind(
    kind="FineTuneJob", plural="finetunejobs", short_names=("ftj",),
    model=FineTuneJob, spec=FineTuneJobSpec, status=FineTuneJobStatus,
    columns=(
        Column("Phase", ".status.phase", description="Pending, Preparing, Running, Evaluating, Succeeded, Failed"),
        Column("Model", ".spec.baseModel.family"),
        Column("Method", ".spec.method"),
        Column("Progress", ".status.progress.summary"),
        Column("Loss", ".status.metrics.loss", "number"),
        Column("Attempts", ".status.attemptCount", "integer", "Training attempts (restarts + 1)"),
        Column("Version", ".status.modelVersion", description="ModelVersion created on success"),
        AGE,
        Column("Message", ".status.message", priority=1),
    ),
)

MODELVERSION = Kind(
    kind="ModelVersion", plural="modelversions", short_names=("mv",),
    model=ModelVersion, spec=ModelVersionSpec, status=ModelVersionStatus,
    immutable_spec=True,
    columns=(
        Column("Model", ".spec.model"),
        Column("Version", ".spec.version", "integer"),
        Column("Eval", ".status.evaluation.score", "number", "The tuned model's primary eval metric"),
        Column("Verdict", ".status.evaluation.verdict"),
        Column("Phase", ".status.phase", description="Pending, Ready, Rejected, Failed"),
        AGE,
        Column("Job", ".spec.lineage.job", priority=1),
    ),
)

MODELDEPLOYMENT = Kind(
    kind="ModelDeployment", plural="modeldeployments", short_names=("mdep",),
    model=ModelDeployment, spec=ModelDeploymentSpec, status=ModelDeploymentStatus,
    columns=(
        Column("Active", ".status.activeVersion", description="Version receiving traffic"),
        Column("Preview", ".status.previewVersion"),
        Column("Phase", ".status.phase", description="Progressing, Healthy, Promoting, Degraded, Aborted"),
        Column("Ready", ".status.ready", description="Ready/desired replicas of the active slot"),
        AGE,
        Column("Slot", ".status.activeSlot", priority=1),
    ),
)

KINDS: tuple[Kind, ...] = (FINETUNEJOB, MODELVERSION, MODELDEPLOYMENT)
BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
