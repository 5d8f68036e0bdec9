"""Reusable policy checks over resource inputs, independent of how they were obtained.

Each resource is a `Resource(type, name, inputs)` with the provider's wire (camelCase) property names — what
Pulumi's mocks receive, what `pulumi preview --json` shows and what a CrossGuard policy sees. Every check
returns a list of human-readable violations; empty means compliant. No Pulumi import: usable anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BUCKET_ACL = "aws:s3/bucketAcl:BucketAcl"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
IAM_POLICY = "aws:iam/policy:Policy"
IAM_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"

GPU_TAINT_KEY = "nvidia.com/gpu"
PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}
# S3 actions that change data; these must never be allowed on Resource "*".
S3_WRITE_PREFIXES = ("s3:Put", "s3:Delete", "s3:Abort", "s3:Restore", "s3:Replicate", "s3:Create",
                     "s3:Bypass", "s3:Update")


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""  # the physical id, which child resources (versioning, ...) reference as `bucket`


def of_type(resources: Iterable[Resource], type_: str) -> list[Resource]:
    return [r for r in resources if r.type == type_]


# --- S3 -------------------------------------------------------------------------------------------------

def bucket_violations(resources: Iterable[Resource]) -> list[str]:
    """Every bucket must be private (all four public-access blocks, no public ACL or policy), encrypted
    with SSE-KMS, and versioned."""
    resources = list(resources)
    problems: list[str] = []
    for bucket in of_type(resources, BUCKET):
        key = bucket.id or bucket.inputs.get("bucket") or bucket.name
        attached = [r for r in resources if r.type != BUCKET and r.inputs.get("bucket") == key]
        problems += [f"bucket {bucket.name}: {p}" for p in _bucket_problems(bucket, attached)]
    return problems


def _bucket_problems(bucket: Resource, attached: list[Resource]) -> list[str]:
    problems = []
    if bucket.inputs.get("acl") in PUBLIC_ACLS:
        problems.append(f"public canned ACL {bucket.inputs['acl']!r}")
    blocks = [r for r in attached if r.type == PUBLIC_ACCESS_BLOCK]
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    if not blocks:
        problems.append("no public access block")
    for block in blocks:
        off = [f for f in flags if block.inputs.get(f) is not True]
        if off:
            problems.append(f"public access block leaves {', '.join(off)} off")
    for acl in (r for r in attached if r.type == BUCKET_ACL):
        if acl.inputs.get("acl") in PUBLIC_ACLS:
            problems.append(f"public ACL {acl.inputs['acl']!r}")
    for policy in (r for r in attached if r.type == BUCKET_POLICY):
        for statement in _statements(policy.inputs.get("policy")):
            if _is_public_allow(statement):
                problems.append(f"bucket policy statement {statement.get('Sid', '?')!r} allows Principal *")
    if not any(_uses_kms(r) for r in attached if r.type == ENCRYPTION):
        problems.append("not encrypted with SSE-KMS")
    if not any((r.inputs.get("versioningConfiguration") or {}).get("status") == "Enabled"
               for r in attached if r.type == VERSIONING):
        problems.append("versioning not enabled")
    return problems


def _uses_kms(encryption: Resource) -> bool:
    for rule in encryption.inputs.get("rules") or []:
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        if default.get("sseAlgorithm") in ("aws:kms", "aws:kms:dsse") and default.get("kmsMasterKeyId"):
            return True
    return False


def _is_public_allow(statement: Mapping[str, Any]) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    principal = statement.get("Principal")
    if isinstance(principal, Mapping):
        principal = principal.get("AWS")
    principals = principal if isinstance(principal, list) else [principal]
    # A condition may narrow "*" (e.g. aws:SourceVpce); an unconditioned "*" is public.
    return "*" in principals and not statement.get("Condition")


# --- IAM ------------------------------------------------------------------------------------------------

def iam_policy_violations(document: str | Mapping[str, Any], *, allowed_s3_arns: Iterable[str]) -> list[str]:
    """Least privilege for one policy document:
    - no `Action: "*"` (or `service:*`), no NotAction / NotResource in Allow statements;
    - S3 write actions only on `allowed_s3_arns` (bucket ARNs or `bucket/*` object patterns), never `*`;
    - any S3 statement's resources inside the allowed buckets."""
    allowed = list(allowed_s3_arns)
    problems: list[str] = []
    for i, statement in enumerate(_statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        where = f"statement {statement.get('Sid') or i}"
        actions = _as_list(statement.get("Action"))
        resources = _as_list(statement.get("Resource"))
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: NotAction/NotResource in an Allow statement")
        for action in actions:
            if action == "*" or action.endswith(":*"):
                problems.append(f"{where}: wildcard action {action!r}")
        s3_actions = [a for a in actions if a.lower().startswith("s3:") or a == "*"]
        writes = [a for a in s3_actions if a in ("*", "s3:*") or a.startswith(S3_WRITE_PREFIXES)]
        if writes and "*" in resources:
            problems.append(f"{where}: S3 write {writes} on Resource '*'")
        if s3_actions:
            for resource in resources:
                if resource != "*" and not any(_within(resource, a) for a in allowed):
                    problems.append(f"{where}: S3 resource {resource!r} outside the project's buckets")
            if "*" in resources and not writes:
                problems.append(f"{where}: S3 read on Resource '*'")
    return problems


def _within(resource: str, allowed: str) -> bool:
    """`resource` names nothing outside `allowed` (which may end in `/*`)."""
    if resource == allowed:
        return True
    # An object pattern `bucket/*` covers any narrower `bucket/prefix/...` pattern.
    return allowed.endswith("/*") and resource.startswith(allowed[:-1])


def _statements(document: Any) -> list[Mapping[str, Any]]:
    if document is None:
        return []
    if isinstance(document, str):
        document = json.loads(document)
    return _as_list(document.get("Statement"))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# --- EKS ------------------------------------------------------------------------------------------------

def gpu_node_group_violations(node_group: Resource) -> list[str]:
    """A GPU group must repel non-GPU pods (NoSchedule taint nvidia.com/gpu) and have finite bounds."""
    problems = []
    taints = node_group.inputs.get("taints") or []
    if not any(t.get("key") == GPU_TAINT_KEY and t.get("effect") == "NO_SCHEDULE" for t in taints):
        problems.append(f"node group {node_group.name}: no NO_SCHEDULE taint {GPU_TAINT_KEY}")
    scaling = node_group.inputs.get("scalingConfig") or {}
    low, want, high = scaling.get("minSize"), scaling.get("desiredSize"), scaling.get("maxSize")
    if None in (low, want, high) or not 0 <= low <= want <= high:
        problems.append(f"node group {node_group.name}: scaling bounds not 0 <= min <= desired <= max")
    return problems


# --- Tags -----------------------------------------------------------------------------------------------

def tag_violations(resource: Resource, required: Mapping[str, str]) -> list[str]:
    tags = resource.inputs.get("tags") or {}
    missing = {k: v for k, v in required.items() if tags.get(k) != v}
    return [f"{resource.type} {resource.name}: missing tags {sorted(missing)}"] if missing else []
