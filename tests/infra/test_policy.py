"""The reusable policy checks catch what they are for: each deliberately bad variant of the real program's
resources (a public bucket, an IAM policy with Action "*", ...) is reported, and the real one is not."""

from __future__ import annotations

import dataclasses
import json

import pytest

from .conftest import build, needs_pulumi

from tuneops_infra import policy  # noqa: E402  (pure Python)
from tuneops_infra.policy import Resource  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")


def _replace(resources: list[Resource], target: Resource, **inputs) -> list[Resource]:
    changed = dataclasses.replace(target, inputs={**target.inputs, **inputs})
    return [changed if r is target else r for r in resources]


def _first(resources, type_: str) -> Resource:
    return next(r for r in resources if r.type == type_)


# --- Buckets: mutate the real build's records ------------------------------------------------------------

@needs_pulumi
@pytest.mark.parametrize("mutation, expected", [
    (lambda rs: _replace(rs, _first(rs, policy.PUBLIC_ACCESS_BLOCK), blockPublicPolicy=False), "blockPublicPolicy"),
    (lambda rs: _replace(rs, _first(rs, policy.PUBLIC_ACCESS_BLOCK), restrictPublicBuckets=False,
                         ignorePublicAcls=False), "restrictPublicBuckets"),
    (lambda rs: [r for r in rs if r is not _first(rs, policy.PUBLIC_ACCESS_BLOCK)], "no public access block"),
    (lambda rs: _replace(rs, _first(rs, policy.BUCKET), acl="public-read"), "public canned ACL"),
    (lambda rs: rs + [Resource(policy.BUCKET_ACL, "acl", {"bucket": _first(rs, policy.BUCKET).id,
                                                          "acl": "public-read-write"})], "public ACL"),
    (lambda rs: rs + [Resource(policy.BUCKET_POLICY, "web", {"bucket": _first(rs, policy.BUCKET).id, "policy":
                      json.dumps({"Statement": [{"Sid": "Web", "Effect": "Allow", "Principal": "*",
                                                 "Action": "s3:GetObject", "Resource": "*"}]})})],
     "allows Principal *"),
    (lambda rs: _replace(rs, _first(rs, policy.ENCRYPTION), rules=[
        {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]), "SSE-KMS"),
    (lambda rs: _replace(rs, _first(rs, policy.VERSIONING), versioningConfiguration={"status": "Suspended"}),
     "versioning"),
], ids=["policy-block-off", "two-blocks-off", "no-block", "bucket-acl", "acl-resource", "public-policy",
        "sse-s3-only", "versioning-suspended"])
def test_bucket_check_catches_a_bad_variant(dev, mutation, expected):
    assert policy.bucket_violations(dev.resources) == []
    problems = policy.bucket_violations(mutation(list(dev.resources)))
    assert problems and any(expected in p for p in problems), problems


@needs_pulumi
def test_bucket_check_catches_a_program_that_makes_a_bucket_public(dev, monkeypatch):
    """Not a hand-edited record: the program itself is changed to attach a public-read bucket policy."""
    from tuneops_infra import storage

    def public_read(bucket_arn: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "PublicRead", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/*"}]})

    monkeypatch.setattr(storage, "tls_only_policy", public_read)
    bad = build(dev.cfg)
    problems = policy.bucket_violations(bad.resources)
    assert len(problems) == 3 and all("PublicRead" in p for p in problems)


def test_deny_statements_with_principal_star_are_not_public():
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    assert not policy._is_public_allow(deny)


# --- IAM ------------------------------------------------------------------------------------------------

BUCKETS = ["arn:aws:s3:::tuneops-test-models", "arn:aws:s3:::tuneops-test-models/*"]


def _doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


GOOD = _doc({"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::tuneops-test-models/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::tuneops-test-models"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:1:key/k"})


@pytest.mark.parametrize("statement, expected", [
    ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "wildcard action '*'"),
    ({"Effect": "Allow", "Action": ["*"], "Resource": "arn:aws:s3:::tuneops-test-models/*"}, "wildcard action '*'"),
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::tuneops-test-models/*"}, "wildcard action 's3:*'"),
    ({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}, "S3 write"),
    ({"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": ["*"]}, "S3 write"),
    ({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::someone-elses-bucket/*"},
     "outside the project's buckets"),
    ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}, "S3 read on Resource '*'"),
    ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "NotAction"),
], ids=["star", "star-list", "s3-star", "put-anywhere", "delete-anywhere", "foreign-bucket", "read-anywhere",
        "not-action"])
def test_iam_check_catches_a_bad_statement(statement, expected):
    assert policy.iam_policy_violations(GOOD, allowed_s3_arns=BUCKETS) == []
    bad = _doc(*GOOD["Statement"], statement)
    problems = policy.iam_policy_violations(json.dumps(bad), allowed_s3_arns=BUCKETS)
    assert any(expected in p for p in problems), problems


def test_iam_check_allows_describe_on_star_for_non_s3_services():
    describe = _doc({"Effect": "Allow", "Action": ["autoscaling:DescribeAutoScalingGroups"], "Resource": "*"})
    assert policy.iam_policy_violations(describe, allowed_s3_arns=BUCKETS) == []


def test_narrower_prefix_inside_a_project_bucket_is_allowed():
    doc = _doc({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::tuneops-test-models/mlflow/*"})
    assert policy.iam_policy_violations(doc, allowed_s3_arns=BUCKETS) == []
    sibling = _doc({"Effect": "Allow", "Action": "s3:PutObject",
                    "Resource": "arn:aws:s3:::tuneops-test-models-evil/*"})  # same prefix, other bucket
    assert policy.iam_policy_violations(sibling, allowed_s3_arns=BUCKETS)


@needs_pulumi
def test_iam_check_catches_a_program_that_grants_action_star(dev, monkeypatch):
    from tuneops_infra import iam

    monkeypatch.setattr(iam, "serving_policy", lambda b: _doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    bad = build(dev.cfg)
    arns = [f"arn:aws:s3:::{b.id}" for b in bad.of_type(policy.BUCKET)]
    flagged = {p.name for p in bad.of_type(policy.IAM_POLICY)
               if policy.iam_policy_violations(p.inputs["policy"], allowed_s3_arns=arns + [f"{a}/*" for a in arns])}
    assert flagged == {f"{dev.cfg.name}-serving"}


# --- Node groups and tags -------------------------------------------------------------------------------

def _node_group(**inputs) -> Resource:
    base = {"taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
            "scalingConfig": {"minSize": 0, "desiredSize": 0, "maxSize": 4}}
    return Resource(policy.NODE_GROUP, "gpu", {**base, **inputs})


@pytest.mark.parametrize("inputs, expected", [
    ({"taints": []}, "taint"),
    ({"taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "PREFER_NO_SCHEDULE"}]}, "taint"),
    ({"scalingConfig": {"minSize": 0, "desiredSize": 0}}, "bounds"),
    ({"scalingConfig": {"minSize": 5, "desiredSize": 2, "maxSize": 4}}, "bounds"),
])
def test_gpu_node_group_check(inputs, expected):
    assert policy.gpu_node_group_violations(_node_group()) == []
    assert any(expected in p for p in policy.gpu_node_group_violations(_node_group(**inputs)))


def test_tag_check():
    required = {"Project": "tuneops", "Stack": "dev"}
    assert policy.tag_violations(Resource("aws:ec2/vpc:Vpc", "v", {"tags": {**required, "Name": "v"}}), required) == []
    assert policy.tag_violations(Resource("aws:ec2/vpc:Vpc", "v", {"tags": {"Project": "tuneops"}}), required)
    assert policy.tag_violations(Resource("aws:ec2/vpc:Vpc", "v", {}), required)
