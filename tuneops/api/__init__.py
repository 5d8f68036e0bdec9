"""tuneops.api: the single source of truth for the three custom resources.

Only pydantic and the standard library are imported here, so the operator, the runtime pods and the CLI
can all share these models without pulling each other's dependencies.
"""

from .base import API_VERSION, GROUP, VERSION, Condition, ObjectMeta
from .finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from .kinds import BY_KIND, KINDS, Kind
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from .modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from .validation import FieldError, InvalidResource, parse_resource, parse_spec

__all__ = [
    "API_VERSION", "BY_KIND", "Condition", "FieldError", "FineTuneJob", "FineTuneJobSpec", "FineTuneJobStatus",
    "GROUP", "InvalidResource", "KINDS", "Kind", "ModelDeployment", "ModelDeploymentSpec",
    "ModelDeploymentStatus", "ModelVersion", "ModelVersionSpec", "ModelVersionStatus", "ObjectMeta", "VERSION",
    "parse_resource", "parse_spec",
]
