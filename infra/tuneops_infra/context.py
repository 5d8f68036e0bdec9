"""What every module needs: the typed config and resource options bound to the stack's AWS provider."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import InfraConfig


@dataclass(frozen=True)
class Context:
    cfg: InfraConfig
    provider: aws.Provider

    def opts(self, **kwargs) -> pulumi.ResourceOptions:
        """Options for an AWS resource: always through this stack's provider (region from config)."""
        return pulumi.ResourceOptions(provider=self.provider, **kwargs)

    def tags(self, name: str, **extra: str) -> dict[str, str]:
        return self.cfg.resource_tags(name, **extra)


def make_context(cfg: InfraConfig) -> Context:
    # default_tags is a safety net for anything created on our behalf; resources still get explicit tags
    # so that what is tagged is visible in code, previews and tests.
    provider = aws.Provider(
        f"{cfg.name}-aws",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.base_tags()),
    )
    return Context(cfg=cfg, provider=provider)
