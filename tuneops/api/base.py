"""Shared building blocks for the tuneops custom resources.

Every spec model is a `TuneopsModel`: camelCase on the wire (the Kubernetes convention), snake_case in
Python, and unknown fields forbidden so a typo in Git is an error, not a silently ignored setting.

Cross-field rules are declared once with `@rules(Rule(...))`: the same rule becomes a pydantic check (for
`tuneops validate`, the CLI and the runtime) and an `x-kubernetes-validations` CEL rule in the generated CRD
(for the apiserver), so the two can never disagree about what a valid spec is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "tuneops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# RFC 1123 subdomain, as Kubernetes requires for object names.
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes resource quantity (a simplified but strict form of resource.Quantity).
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"

DnsName = Field(pattern=DNS_NAME, max_length=253)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, stated once for pydantic and once (as CEL) for the apiserver.

    `check` receives the model instance and returns True when the rule holds. `field` is the JSON path
    (relative to the model) that the error names, e.g. `.quantization`.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str = ""


class RuleViolation(ValueError):
    """Raised inside a model validator; carries the relative field path for a precise error."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def rules(*declared: Rule) -> Callable[[type], type]:
    """Attach cross-field rules to a model class (see module docstring)."""

    def wrap(cls: type) -> type:
        cls.__rules__ = tuple(getattr(cls, "__rules__", ())) + declared
        return cls

    return wrap


class TuneopsModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )
    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self):
        for rule in type(self).__rules__:
            if not rule.check(self):
                raise RuleViolation(rule.field, rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        # Carry the cross-field rules into the JSON schema, where the CRD generator turns them into CEL.
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.__rules__:
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message, **({"fieldPath": r.field} if r.field else {})}
                for r in cls.__rules__
            ]
        # Nested objects that default to their own defaults: an empty object default lets the apiserver fill
        # the nested defaults too, so stored objects show the effective settings.
        for name, field in cls.model_fields.items():
            factory = field.default_factory
            if isinstance(factory, type) and issubclass(factory, BaseModel):
                key = field.alias or name
                if key in target.get("properties", {}):
                    target["properties"][key]["default"] = {}
        return schema

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML/JSON: camelCase, unset optionals omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def is_set(value: Any) -> bool:
    return value is not None


# ---------------------------------------------------------------------------------------------------------
# References and secrets: credentials only ever travel as references to Kubernetes Secrets.

class SecretRef(TuneopsModel):
    """A reference to a Kubernetes Secret in the resource's namespace."""

    name: str = Field(pattern=DNS_NAME, max_length=253, description="Secret name.")


class SecretKeyRef(TuneopsModel):
    name: str = Field(pattern=DNS_NAME, max_length=253, description="Secret name.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret.")


class EnvValueFrom(TuneopsModel):
    secret_key_ref: SecretKeyRef


# Env names that must never carry a literal value in Git.
SECRET_LIKE_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)


@rules(
    Rule(
        cel="has(self.value) != has(self.valueFrom)",
        message="set exactly one of value or valueFrom",
        check=lambda s: is_set(s.value) != is_set(s.value_from),
    ),
    Rule(
        cel="!has(self.value) || !self.name.upperAscii().matches("
        "'(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)')",
        message="looks like a secret: inline values are not allowed, use valueFrom.secretKeyRef",
        check=lambda s: s.value is None or not SECRET_LIKE_NAME.search(s.name),
        field=".value",
    ),
)
class EnvVar(TuneopsModel):
    """An environment variable for the pods; secrets must come from a Secret via valueFrom."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str | None = Field(default=None, max_length=4096)
    value_from: EnvValueFrom | None = None


# URIs may name where data lives, never who may read it.
URI_WITH_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s]+@")
STORAGE_URI = r"^(s3|gs|gcs|az|abfs|file)://[^\s]+$|^/[^\s]*$"


def no_userinfo(uri: str | None) -> bool:
    return uri is None or not URI_WITH_USERINFO.match(uri)


def no_userinfo_rule(field: str) -> Rule:
    """Reject `scheme://user:pass@host/...`: credentials belong in a Secret, never in Git."""
    return Rule(
        cel=f"!has(self.{field}) || !self.{field}.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@ ]+@')",
        message="credentials must not be embedded in the URI; reference a Secret instead",
        check=lambda s: no_userinfo(getattr(s, _snake(field))),
        field=f".{field}",
    )


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


# ---------------------------------------------------------------------------------------------------------
# Kubernetes-style status pieces.

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(TuneopsModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316)
    status: ConditionStatus
    reason: str = Field(default="Unknown", pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime | None = None
    observed_generation: int | None = Field(default=None, ge=0)


class ObjectMeta(BaseModel):
    """The part of metadata that tuneops reads; everything else Kubernetes sets is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(pattern=DNS_NAME, max_length=253)
    namespace: str | None = Field(default=None, pattern=DNS_NAME, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Scheduling and resources, shared by training pods and serving pods.

class Toleration(TuneopsModel):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class GpuSpec(TuneopsModel):
    count: int = Field(default=0, ge=0, le=64, description="GPUs per pod (per node for multi-node jobs).")
    product: str | None = Field(
        default=None, max_length=128,
        description="GPU product label to select nodes, e.g. NVIDIA-A10G (nvidia.com/gpu.product).")
    resource_name: str = Field(default="nvidia.com/gpu", max_length=253, description="Extended resource name.")


class ResourcesSpec(TuneopsModel):
    """Compute for one pod: GPUs, CPU and memory, and where it may be scheduled."""

    gpu: GpuSpec = Field(default_factory=GpuSpec)
    cpu: str | None = Field(default=None, pattern=QUANTITY, max_length=64, description="CPU request, e.g. 4 or 500m.")
    memory: str | None = Field(default=None, pattern=QUANTITY, max_length=64, description="Memory request and limit, e.g. 48Gi.")
    shared_memory: str | None = Field(
        default=None, pattern=QUANTITY, max_length=64, description="Size of /dev/shm (NCCL and dataloaders need it).")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    priority_class_name: str | None = Field(default=None, pattern=DNS_NAME, max_length=253)
    service_account_name: str | None = Field(
        default=None, pattern=DNS_NAME, max_length=253,
        description="ServiceAccount the pods run as, e.g. one bound to a cloud IAM role (IRSA).")

