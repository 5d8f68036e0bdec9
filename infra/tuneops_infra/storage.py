"""KMS key and the three S3 buckets: datasets, checkpoints, models.

All private (public access blocked, ACLs disabled, TLS-only policy), SSE-KMS, versioned (the first line of
disaster recovery), with lifecycle rules: old checkpoints expire, old versions expire, stuck uploads abort."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .context import Context

BUCKET_KINDS = ("datasets", "checkpoints", "models")


@dataclass(frozen=True)
class Storage:
    key: aws.kms.Key
    buckets: dict[str, aws.s3.Bucket]  # by kind

    def arn(self, kind: str) -> pulumi.Output[str]:
        return self.buckets[kind].arn


def build_storage(ctx: Context) -> Storage:
    cfg = ctx.cfg
    key = aws.kms.Key(f"{cfg.name}-data", description=f"{cfg.name}: S3 buckets, EKS secrets, RDS, ECR",
                      enable_key_rotation=True, deletion_window_in_days=30,
                      tags=ctx.tags(f"{cfg.name}-data"), opts=ctx.opts())
    aws.kms.Alias(f"{cfg.name}-data", name=f"alias/{cfg.name}-data", target_key_id=key.key_id,
                  opts=ctx.opts())
    buckets = {kind: _bucket(ctx, kind, key) for kind in BUCKET_KINDS}
    return Storage(key=key, buckets=buckets)


def _bucket(ctx: Context, kind: str, key: aws.kms.Key) -> aws.s3.Bucket:
    cfg = ctx.cfg
    name = cfg.bucket_name(kind)
    bucket = aws.s3.Bucket(name, bucket=name, force_destroy=cfg.force_destroy_buckets,
                           tags=ctx.tags(name, **{"tuneops.io/bucket": kind}), opts=ctx.opts())
    child = ctx.opts(parent=bucket)
    aws.s3.BucketPublicAccessBlock(name, bucket=bucket.id, block_public_acls=True, block_public_policy=True,
                                   ignore_public_acls=True, restrict_public_buckets=True, opts=child)
    aws.s3.BucketOwnershipControls(name, bucket=bucket.id, opts=child, rule=aws.s3.BucketOwnershipControlsRuleArgs(
        object_ownership="BucketOwnerEnforced"))  # disables ACLs altogether
    aws.s3.BucketServerSideEncryptionConfiguration(name, bucket=bucket.id, opts=child, rules=[
        aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
            apply_server_side_encryption_by_default=aws.s3.
            BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                sse_algorithm="aws:kms", kms_master_key_id=key.arn),
            bucket_key_enabled=True,  # far fewer KMS calls (cost) for many-object checkpoints
        )])
    aws.s3.BucketVersioning(name, bucket=bucket.id, opts=child,
                            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                                status="Enabled"))
    aws.s3.BucketLifecycleConfiguration(name, bucket=bucket.id, rules=lifecycle_rules(ctx, kind), opts=child)
    aws.s3.BucketPolicy(name, bucket=bucket.id, policy=bucket.arn.apply(tls_only_policy), opts=child)
    return bucket


def lifecycle_rules(ctx: Context, kind: str) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    cfg = ctx.cfg
    rules = [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-uploads", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            abort_incomplete_multipart_upload=aws.s3.
            BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=7)),
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-old-versions", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=cfg.noncurrent_version_retention_days)),
    ]
    if kind == "checkpoints":
        # Checkpoints only matter until the job's model is registered; keeping them forever is the
        # classic silent cost. Models and datasets are kept (lineage).
        rules.append(aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-old-checkpoints", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=cfg.checkpoint_retention_days)))
    return rules


def tls_only_policy(bucket_arn: str) -> str:
    import json

    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]})
