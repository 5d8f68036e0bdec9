"""Typed stack configuration.

Everything the program builds comes from one `InfraConfig`, read from the stack's `tuneops:*` keys
(`InfraConfig.from_pulumi()`) or from a plain mapping (`InfraConfig.from_mapping()`, what tests and
`load_stack_file` use). This module imports no Pulumi at module level so it can be used without the SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

NAMESPACE = "tuneops"
CAPACITY_TYPES = ("SPOT", "ON_DEMAND")
WORKLOADS = ("training", "serving")
NAT_MODES = ("single", "perAz")


class ConfigError(ValueError):
    """A stack config value is missing or inconsistent; the message names the key."""


@dataclass(frozen=True)
class NodeGroupConfig:
    """A managed node group. GPU groups carry a workload; the capacity type defaults from it."""

    name: str
    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    disk_size_gib: int = 100
    capacity_type: str = "ON_DEMAND"
    workload: str | None = None  # None for the system group
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"node group {self.name!r}"
        if not self.instance_types:
            raise ConfigError(f"{where}: instanceTypes must not be empty")
        if not 0 <= self.min_size <= self.desired_size <= self.max_size:
            raise ConfigError(f"{where}: need 0 <= minSize <= desiredSize <= maxSize, got "
                              f"{self.min_size}/{self.desired_size}/{self.max_size}")
        if self.max_size < 1:
            raise ConfigError(f"{where}: maxSize must be >= 1")
        if self.capacity_type not in CAPACITY_TYPES:
            raise ConfigError(f"{where}: capacityType must be one of {CAPACITY_TYPES}")
        if self.workload is not None and self.workload not in WORKLOADS:
            raise ConfigError(f"{where}: workload must be one of {WORKLOADS}")


def default_capacity_type(workload: str) -> str:
    # Training resumes from checkpoints, so a spot interruption costs minutes; serving needs steady capacity.
    return "SPOT" if workload == "training" else "ON_DEMAND"


@dataclass(frozen=True)
class DatabaseConfig:
    """Optional RDS PostgreSQL for MLflow's backend store."""

    enabled: bool = False
    instance_class: str = "db.t4g.medium"
    engine_version: str = "16"
    allocated_storage_gib: int = 20
    max_allocated_storage_gib: int = 100
    backup_retention_days: int = 7
    multi_az: bool = False
    deletion_protection: bool = True


@dataclass(frozen=True)
class ChartsConfig:
    """Helm releases installed into the cluster after it exists."""

    deploy: bool = True
    # False when Argo CD owns the tuneops release (examples/gitops/argocd/tuneops.yaml): one owner per release.
    install_tuneops: bool = True
    tuneops_chart_path: str = "../charts/tuneops"
    namespace: str = "tuneops-system"
    workload_namespace: str = "ml"
    argocd_version: str = "7.7.11"
    mlflow_version: str = "0.17.2"
    device_plugin_version: str = "0.17.0"
    cluster_autoscaler_version: str = "9.43.2"


@dataclass(frozen=True)
class InfraConfig:
    stack: str
    region: str
    availability_zones: tuple[str, ...]
    system_node_group: NodeGroupConfig
    gpu_node_groups: tuple[NodeGroupConfig, ...]
    project: str = "tuneops"
    tags: Mapping[str, str] = field(default_factory=dict)
    vpc_cidr: str = "10.40.0.0/16"
    nat_mode: str = "single"
    kubernetes_version: str = "1.33"
    endpoint_public_access: bool = False
    endpoint_private_access: bool = True
    public_access_cidrs: tuple[str, ...] = ()
    cluster_admin_arns: tuple[str, ...] = ()
    bucket_prefix: str = ""
    force_destroy_buckets: bool = False
    checkpoint_retention_days: int = 30
    noncurrent_version_retention_days: int = 90
    ecr_repositories: tuple[str, ...] = ("operator", "runtime")
    image_tag: str = "0.1.0"
    log_retention_days: int = 30
    alarm_emails: tuple[str, ...] = ()
    monthly_budget_usd: float = 1000.0
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    charts: ChartsConfig = field(default_factory=ChartsConfig)
    # A pulumi secret Output (or plain str in tests); only needed when database.enabled.
    mlflow_db_password: Any = None

    def __post_init__(self) -> None:
        if len(self.availability_zones) < 2:
            raise ConfigError("availabilityZones: EKS needs at least two")
        if self.nat_mode not in NAT_MODES:
            raise ConfigError(f"natMode must be one of {NAT_MODES}")
        if not (self.endpoint_public_access or self.endpoint_private_access):
            raise ConfigError("endpointPublicAccess/endpointPrivateAccess: at least one must be true")
        if self.endpoint_public_access and not self.public_access_cidrs:
            # An empty list means 0.0.0.0/0 to EKS: make "open to the world" an explicit choice.
            raise ConfigError("publicAccessCidrs: required when endpointPublicAccess is true")
        names = [g.name for g in self.gpu_node_groups]
        if len(set(names)) != len(names):
            raise ConfigError("gpuNodeGroups: names must be unique")
        if self.database.enabled and self.mlflow_db_password is None:
            raise ConfigError("mlflowDbPassword: required (as a secret) when mlflowDatabase.enabled is true")

    @property
    def name(self) -> str:
        """Base name of every resource: `<project>-<stack>`."""
        return f"{self.project}-{self.stack}"

    @property
    def cluster_name(self) -> str:
        return self.name

    def bucket_name(self, kind: str) -> str:
        return f"{self.bucket_prefix or self.name}-{kind}"

    def base_tags(self) -> dict[str, str]:
        """Tags every taggable resource carries (user tags cannot drop the project/stack ones)."""
        return {**self.tags, "Project": self.project, "Stack": self.stack, "ManagedBy": "pulumi"}

    def resource_tags(self, name: str, **extra: str) -> dict[str, str]:
        return {**self.base_tags(), "Name": name, **extra}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, stack: str,
                     mlflow_db_password: Any = None) -> "InfraConfig":
        """Build from un-namespaced camelCase keys, as written in Pulumi.<stack>.yaml."""
        v = dict(values)
        db = v.get("mlflowDatabase") or {}
        charts = v.get("charts") or {}
        return cls(
            stack=stack,
            project=v.get("project", "tuneops"),
            region=_required(v, "region"),
            availability_zones=tuple(_required(v, "availabilityZones")),
            tags=dict(v.get("tags") or {}),
            vpc_cidr=v.get("vpcCidr", "10.40.0.0/16"),
            nat_mode=v.get("natMode", "single"),
            kubernetes_version=str(v.get("kubernetesVersion", "1.33")),
            endpoint_public_access=_bool(v.get("endpointPublicAccess", False)),
            endpoint_private_access=_bool(v.get("endpointPrivateAccess", True)),
            public_access_cidrs=tuple(v.get("publicAccessCidrs") or ()),
            cluster_admin_arns=tuple(v.get("clusterAdminArns") or ()),
            system_node_group=_node_group(_required(v, "systemNodeGroup"), default_name="system"),
            gpu_node_groups=tuple(_node_group(g) for g in v.get("gpuNodeGroups") or ()),
            bucket_prefix=v.get("bucketPrefix", ""),
            force_destroy_buckets=_bool(v.get("forceDestroyBuckets", False)),
            checkpoint_retention_days=int(v.get("checkpointRetentionDays", 30)),
            noncurrent_version_retention_days=int(v.get("noncurrentVersionRetentionDays", 90)),
            ecr_repositories=tuple(v.get("ecrRepositories") or ("operator", "runtime")),
            image_tag=str(v.get("imageTag", "0.1.0")),
            log_retention_days=int(v.get("logRetentionDays", 30)),
            alarm_emails=tuple(v.get("alarmEmails") or ()),
            monthly_budget_usd=float(v.get("monthlyBudgetUsd", 1000)),
            database=DatabaseConfig(
                enabled=_bool(db.get("enabled", False)),
                instance_class=db.get("instanceClass", DatabaseConfig.instance_class),
                engine_version=str(db.get("engineVersion", DatabaseConfig.engine_version)),
                allocated_storage_gib=int(db.get("allocatedStorageGiB", DatabaseConfig.allocated_storage_gib)),
                max_allocated_storage_gib=int(db.get("maxAllocatedStorageGiB",
                                                     DatabaseConfig.max_allocated_storage_gib)),
                backup_retention_days=int(db.get("backupRetentionDays", DatabaseConfig.backup_retention_days)),
                multi_az=_bool(db.get("multiAz", False)),
                deletion_protection=_bool(db.get("deletionProtection", True)),
            ),
            charts=ChartsConfig(
                deploy=_bool(charts.get("deploy", True)),
                install_tuneops=_bool(charts.get("installTuneops", True)),
                tuneops_chart_path=charts.get("tuneopsChartPath", ChartsConfig.tuneops_chart_path),
                namespace=charts.get("namespace", ChartsConfig.namespace),
                workload_namespace=charts.get("workloadNamespace", ChartsConfig.workload_namespace),
                argocd_version=str(charts.get("argocdVersion", ChartsConfig.argocd_version)),
                mlflow_version=str(charts.get("mlflowVersion", ChartsConfig.mlflow_version)),
                device_plugin_version=str(charts.get("devicePluginVersion", ChartsConfig.device_plugin_version)),
                cluster_autoscaler_version=str(charts.get("clusterAutoscalerVersion",
                                                          ChartsConfig.cluster_autoscaler_version)),
            ),
            mlflow_db_password=mlflow_db_password,
        )

    @classmethod
    def from_pulumi(cls) -> "InfraConfig":
        """Read the current stack's config (inside `pulumi up` / `preview`)."""
        import pulumi

        config = pulumi.Config(NAMESPACE)
        values: dict[str, Any] = {}
        for key in _KNOWN_KEYS:
            raw = config.get(key)
            if raw is not None:
                values[key] = _decode(raw)
        return cls.from_mapping(values, stack=pulumi.get_stack(),
                                mlflow_db_password=config.get_secret("mlflowDbPassword"))


_KNOWN_KEYS = (
    "project", "region", "availabilityZones", "tags", "vpcCidr", "natMode", "kubernetesVersion",
    "endpointPublicAccess", "endpointPrivateAccess", "publicAccessCidrs", "clusterAdminArns",
    "systemNodeGroup", "gpuNodeGroups", "bucketPrefix", "forceDestroyBuckets", "checkpointRetentionDays",
    "noncurrentVersionRetentionDays", "ecrRepositories", "imageTag", "logRetentionDays", "alarmEmails",
    "monthlyBudgetUsd", "mlflowDatabase", "charts",
)


def load_stack_file(path: str | Path, *, mlflow_db_password: Any = None) -> InfraConfig:
    """Parse a `Pulumi.<stack>.yaml` file (secrets are not decrypted: pass the password explicitly)."""
    import yaml

    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    prefix = f"{NAMESPACE}:"
    values = {k[len(prefix):]: v for k, v in (doc.get("config") or {}).items() if k.startswith(prefix)}
    if mlflow_db_password is None and "mlflowDbPassword" in values:
        mlflow_db_password = values["mlflowDbPassword"]  # a {secure: ...} blob is enough to say "it is set"
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return InfraConfig.from_mapping(values, stack=stack, mlflow_db_password=mlflow_db_password)


def _node_group(raw: Mapping[str, Any], *, default_name: str | None = None) -> NodeGroupConfig:
    name = raw.get("name", default_name)
    if not name:
        raise ConfigError("gpuNodeGroups[]: every group needs a name")
    workload = raw.get("workload") if default_name is None else None
    if default_name is None and workload is None:
        workload = "training"
    capacity = raw.get("capacityType") or (default_capacity_type(workload) if workload else "ON_DEMAND")
    return NodeGroupConfig(
        name=name,
        instance_types=tuple(raw.get("instanceTypes") or ()),
        min_size=int(raw.get("minSize", 0)),
        desired_size=int(raw.get("desiredSize", raw.get("minSize", 0))),
        max_size=int(raw.get("maxSize", 1)),
        disk_size_gib=int(raw.get("diskSizeGiB", 100 if workload is None else 200)),
        capacity_type=str(capacity).upper().replace("-", "_"),
        workload=workload,
        labels=dict(raw.get("labels") or {}),
    )


def _required(values: Mapping[str, Any], key: str) -> Any:
    if values.get(key) in (None, "", [], {}):
        raise ConfigError(f"{NAMESPACE}:{key} is required")
    return values[key]


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _decode(raw: str) -> Any:
    # Pulumi stores structured values as JSON strings and plain values as-is.
    try:
        return json.loads(raw)
    except ValueError:
        return raw
