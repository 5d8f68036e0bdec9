"""ModelDeployment: serve a ModelVersion blue/green, promote by editing spec.activeVersion in Git."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import (
    API_VERSION, DNS_NAME, Condition, EnvVar, ObjectMeta, ResourcesSpec, Rule, SecretRef, TuneopsModel, no_userinfo,
    rules,
)


class EngineSpec(TuneopsModel):
    kind: Literal["tgi", "builtin"] = Field(
        default="tgi", description="tgi: Hugging Face text-generation-inference; builtin: tuneops serve (CPU ok).")
    image: str | None = Field(default=None, max_length=512, description="Unset = the operator's default for the kind.")
    args: list[str] = Field(default_factory=list, max_length=64)
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    port: int = Field(default=8080, ge=1, le=65535)


class AutoscalingMetric(TuneopsModel):
    type: Literal["cpu", "concurrency", "requestsPerSecond"] = "cpu"
    target: float = Field(default=70, gt=0, description="CPU utilisation %, in-flight requests or req/s per pod.")


@rules(
    Rule(
        cel="self.minReplicas <= self.maxReplicas",
        message="minReplicas must be <= maxReplicas",
        check=lambda s: s.min_replicas <= s.max_replicas,
        field=".minReplicas",
    ),
)
class AutoscalingSpec(TuneopsModel):
    enabled: bool = True
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    metric: AutoscalingMetric = Field(default_factory=AutoscalingMetric)


class PromotionGates(TuneopsModel):
    ready: bool = Field(default=True, description="All preview pods Ready before the switch.")
    eval_verdict: Literal["Passed", "Any"] = Field(
        default="Passed", description="Passed: refuse versions whose eval gate did not pass.")
    max_error_rate: float | None = Field(default=None, ge=0, le=1, description="Max 5xx fraction on the preview.")
    max_p95_latency_ms: float | None = Field(default=None, gt=0)


@rules(
    Rule(
        cel="has(self.maxErrorRate) || has(self.maxP95LatencyMs)",
        message="set at least one of maxErrorRate or maxP95LatencyMs",
        check=lambda s: s.max_error_rate is not None or s.max_p95_latency_ms is not None,
    ),
)
class PostPromotionChecks(TuneopsModel):
    """Checks on the new version's live traffic after the switch; a failure switches traffic back."""

    window_seconds: int = Field(default=600, ge=10, le=86400,
                                description="Watch the new version this long after the switch.")
    interval_seconds: int = Field(default=15, ge=1, le=3600, description="Look at the metrics this often.")
    max_error_rate: float | None = Field(default=None, ge=0, le=1, description="Max 5xx fraction on the new version.")
    max_p95_latency_ms: float | None = Field(default=None, gt=0, description="Max p95 request latency (ms).")


class PromotionSpec(TuneopsModel):
    mode: Literal["manual", "auto"] = Field(
        default="manual", description="manual: the idle slot only previews; auto: switch once gates pass.")
    auto_promotion_seconds: int = Field(default=0, ge=0, description="Wait this long with gates green before switching.")
    gates: PromotionGates = Field(default_factory=PromotionGates)
    scale_down_delay_seconds: int = Field(default=600, ge=0, description="Keep the old slot warm for instant rollback.")
    preview_replicas: int = Field(default=1, ge=0, le=1000, description="Replicas of the preview slot before promotion.")
    post_promotion: PostPromotionChecks | None = Field(
        default=None, description="Roll back to the previous (still warm) version when these fail after a switch.")


@rules(
    Rule(
        cel="!self.repoUrl.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@ ]+@') || self.repoUrl.matches('^ssh://[^/@: ]+@')",
        message="credentials must not be embedded in the URL (only ssh://user@host); reference a Secret instead",
        check=lambda s: no_userinfo(s.repo_url) or re.match(r"^ssh://[^/@: ]+@", s.repo_url) is not None,
        field=".repoUrl",
    ),
    Rule(
        cel="!self.path.startsWith('/') && !self.path.split('/').exists(p, p == '..')",
        message="path must be relative to the repository root, without '..'",
        check=lambda s: not s.path.startswith("/") and ".." not in s.path.split("/"),
        field=".path",
    ),
)
class GitWriteBackSpec(TuneopsModel):
    """Where the operator commits a reverted spec.activeVersion after a rollback, so Git and the cluster agree."""

    repo_url: str = Field(pattern=r"^(https?|ssh|git|file)://[^\s]+$|^[A-Za-z0-9._-]+@[^\s:]+:[^\s]+$",
                          max_length=1024, description="https://, ssh://, git@host:org/repo.git, git:// or file://.")
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]+$", max_length=255)
    path: str = Field(min_length=1, max_length=1024, pattern=r"^[^\s]+$",
                      description="File in the repository that holds this ModelDeployment's YAML.")
    secret_ref: SecretRef | None = Field(
        default=None, description="Secret with `token`, `username`+`password` or `ssh-privatekey` "
        "(+ optional `known_hosts`). Not needed for file:// or git://.")
    author_name: str = Field(default="tuneops-operator", min_length=1, max_length=256)
    author_email: str = Field(default="tuneops-operator@localhost", min_length=3, max_length=256)


@rules(
    Rule(
        cel="!has(self.previewVersion) || self.previewVersion != self.activeVersion",
        message="previewVersion must differ from activeVersion",
        check=lambda s: s.preview_version is None or s.preview_version != s.active_version,
        field=".previewVersion",
    ),
)
class ModelDeploymentSpec(TuneopsModel):
    model: str = Field(pattern=DNS_NAME, max_length=63, description="Registered model served.")
    active_version: str = Field(pattern=DNS_NAME, max_length=253,
                                description="ModelVersion behind the main Service. Edit in Git to promote.")
    preview_version: str | None = Field(default=None, pattern=DNS_NAME, max_length=253,
                                        description="ModelVersion in the idle slot, behind <name>-preview.")
    engine: EngineSpec = Field(default_factory=EngineSpec)
    replicas: int = Field(default=1, ge=0, le=1000, description="Replicas when autoscaling is off.")
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    strategy: Literal["slots", "adapters"] = Field(
        default="slots", description="slots: a second fleet (blue/green) per version. adapters: when the versions "
        "are LoRA adapters of one base model, one fleet loads them all (TGI LORA_ADAPTERS / builtin --adapter) and "
        "promotion moves the default adapter; otherwise falls back to slots (condition AdapterSharing=False).")
    git_write_back: GitWriteBackSpec | None = None


DeploymentPhase = Literal["Progressing", "Healthy", "Promoting", "Degraded", "Aborted", "RolledBack"]
Slot = Literal["blue", "green"]


class SlotStatus(TuneopsModel):
    version: str | None = None
    replicas: int = 0
    ready_replicas: int = 0


class SlotsStatus(TuneopsModel):
    blue: SlotStatus = Field(default_factory=SlotStatus)
    green: SlotStatus = Field(default_factory=SlotStatus)


class Endpoints(TuneopsModel):
    active: str | None = None
    preview: str | None = None


class PostPromotionStatus(TuneopsModel):
    """The watch over the last promoted version (spec.promotion.postPromotion)."""

    version: str
    previous_version: str | None = Field(default=None, description="Where a rollback goes (the warm slot).")
    since: datetime | None = None
    state: Literal["Watching", "Passed", "Failed"] = "Watching"
    error_rate: float | None = None
    p95_latency_ms: float | None = None
    message: str | None = None


class RollbackStatus(TuneopsModel):
    """The last automatic rollback. While `holding`, spec.activeVersion still names `from` and is not re-promoted."""

    from_: str = Field(alias="from", description="Version that failed its post-promotion checks.")
    to: str = Field(description="Version traffic went back to.")
    reason: str = Field(description="Which check failed, with the measured values.")
    time: datetime | None = None
    holding: bool = Field(default=True, description="True until spec.activeVersion stops naming `from`.")
    commit: str | None = Field(default=None, description="Git commit that reverted spec.activeVersion (gitWriteBack).")
    write_back: Literal["Pending", "Committed", "UpToDate", "Skipped", "Failed"] | None = None
    write_back_message: str | None = None


class ModelDeploymentStatus(TuneopsModel):
    phase: DeploymentPhase = "Progressing"
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    active_version: str | None = Field(default=None, description="Version actually receiving traffic.")
    active_slot: Slot | None = None
    preview_version: str | None = None
    slots: SlotsStatus = Field(default_factory=SlotsStatus)
    endpoints: Endpoints = Field(default_factory=Endpoints)
    replicas: int = 0
    ready_replicas: int = 0
    ready: str | None = Field(default=None, description="ready/desired of the active slot, e.g. '2/2'.")
    last_promotion_time: datetime | None = None
    post_promotion: PostPromotionStatus | None = None
    rollback: RollbackStatus | None = None


class ModelDeployment(TuneopsModel):
    model_config = TuneopsModel.model_config | {"alias_generator": None}

    api_version: Literal["tuneops.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
