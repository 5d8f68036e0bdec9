"""ECR repositories for the images the chart runs (operator, runtime = trainer + built-in server)."""

from __future__ import annotations

import json

import pulumi_aws as aws

from .context import Context

# Untagged layers pile up with every CI push; release tags are immutable and kept.
UNTAGGED_EXPIRY_DAYS = 14


def build_registries(ctx: Context, key: aws.kms.Key) -> dict[str, aws.ecr.Repository]:
    cfg = ctx.cfg
    repos = {}
    for component in cfg.ecr_repositories:
        name = f"{cfg.name}/{component}"
        repo = aws.ecr.Repository(
            f"{cfg.name}-{component}", name=name,
            image_tag_mutability="IMMUTABLE",  # a tag names one image forever: rollbacks are exact
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(
                encryption_type="KMS", kms_key=key.arn)],
            tags=ctx.tags(name), opts=ctx.opts())
        aws.ecr.LifecyclePolicy(f"{cfg.name}-{component}", repository=repo.name, policy=json.dumps({"rules": [{
            "rulePriority": 1, "description": "expire untagged images",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                          "countNumber": UNTAGGED_EXPIRY_DAYS},
            "action": {"type": "expire"},
        }]}), opts=ctx.opts(parent=repo))
        repos[component] = repo
    return repos
