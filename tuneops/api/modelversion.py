"""ModelVersion: one immutable trained artifact, with its lineage and evaluation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import API_VERSION, DNS_NAME, STORAGE_URI, Condition, ObjectMeta, Rule, TuneopsModel, rules
from .evaluation import EvaluationResult
from .model_source import BaseModelSpec

SHA256 = r"^[a-f0-9]{64}$"


class ArtifactRef(TuneopsModel):
    uri: str = Field(pattern=STORAGE_URI, max_length=2048, description="Where the weights are (s3://, file://, path).")
    format: Literal["safetensors"] = Field(default="safetensors", description="Only safetensors: no pickles.")
    sha256: str | None = Field(default=None, pattern=SHA256, description="Digest of the artifact's manifest.")
    dtype: Literal["bfloat16", "float16", "float32"] | None = None


class Lineage(TuneopsModel):
    job: str | None = Field(default=None, pattern=DNS_NAME, max_length=253, description="The FineTuneJob that made it.")
    dataset_hash: str | None = Field(default=None, pattern=r"^sha256:[a-f0-9]{64}$")
    dataset_uri: str | None = Field(default=None, max_length=2048)
    mlflow_run_id: str | None = Field(default=None, max_length=128)
    spec_hash: str | None = Field(default=None, pattern=r"^sha256:[a-f0-9]{64}$",
                                  description="Digest of the FineTuneJob spec that produced it.")


class RegistryRef(TuneopsModel):
    name: str = Field(min_length=1, max_length=256, description="Registered model name in MLflow.")
    version: str = Field(pattern=r"^[0-9]+$", max_length=20)
    tracking_uri: str | None = Field(default=None, max_length=2048)


@rules(
    Rule(
        cel="has(self.adapter) || has(self.merged)",
        message="a ModelVersion needs adapter or merged weights",
        check=lambda s: s.adapter is not None or s.merged is not None,
    ),
)
class ModelVersionSpec(TuneopsModel):
    """Immutable once created: a new training result is a new ModelVersion."""

    model: str = Field(pattern=DNS_NAME, max_length=63, description="Registered model this is a version of.")
    version: int = Field(ge=1, description="Version number within the model.")
    base_model: BaseModelSpec
    adapter: ArtifactRef | None = None
    merged: ArtifactRef | None = None
    lineage: Lineage = Field(default_factory=Lineage)
    registry: RegistryRef | None = None
    evaluation: EvaluationResult | None = Field(
        default=None, description="Evaluation recorded at creation (base vs tuned, gate verdict).")


ModelVersionPhase = Literal["Pending", "Ready", "Rejected", "Failed"]


class ModelVersionStatus(TuneopsModel):
    phase: ModelVersionPhase = "Pending"
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    evaluation: EvaluationResult | None = None
    deployed_by: list[str] = Field(default_factory=list, description="ModelDeployments serving it.")
    created_time: datetime | None = None


class ModelVersion(TuneopsModel):
    model_config = TuneopsModel.model_config | {"alias_generator": None}

    api_version: Literal["tuneops.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelVersion"] = "ModelVersion"
    metadata: ObjectMeta
    spec: ModelVersionSpec
    status: ModelVersionStatus | None = None
