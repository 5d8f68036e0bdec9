"""The whole stack: `build(config) -> outputs`. `__main__.py` calls `main()`; tests call `build` under
Pulumi's mocks."""

from __future__ import annotations

from typing import Any

import pulumi

from .apps import build_apps
from .config import InfraConfig
from .context import make_context
from .database import build_database
from .eks import build_cluster
from .iam import build_workload_roles
from .monitoring import build_monitoring
from .network import build_network
from .registry import build_registries
from .storage import build_storage


def build(cfg: InfraConfig) -> dict[str, Any]:
    ctx = make_context(cfg)
    network = build_network(ctx)
    storage = build_storage(ctx)
    repos = build_registries(ctx, storage.key)
    cluster = build_cluster(ctx, network, storage.key)
    roles = build_workload_roles(ctx, cluster, storage)
    monitoring = build_monitoring(ctx, cluster, roles)
    database = build_database(ctx, network, cluster, storage.key) if cfg.database.enabled else None
    apps = build_apps(ctx, cluster, storage, roles, repos, database) if cfg.charts.deploy else None
    return {
        "region": cfg.region,
        "vpcId": network.vpc.id,
        "privateSubnetIds": network.private_subnet_ids,
        "clusterName": cluster.cluster.name,
        "clusterEndpoint": cluster.cluster.endpoint,
        "oidcProviderArn": cluster.oidc_provider.arn,
        "nodeGroups": {name: group.node_group_name for name, group in cluster.node_groups.items()},
        "buckets": {kind: bucket.bucket for kind, bucket in storage.buckets.items()},
        "kmsKeyArn": storage.key.arn,
        "ecrRepositories": {component: repo.repository_url for component, repo in repos.items()},
        "roleArns": {workload: role.arn for workload, role in roles.roles.items()},
        "alertsTopicArn": monitoring.topic.arn,
        "mlflowDatabaseEndpoint": database.endpoint if database else None,
        "helmReleases": sorted(apps.releases) if apps else [],
        "tuneopsChartValues": apps.tuneops_values if apps else None,
    }


def main() -> None:
    for key, value in build(InfraConfig.from_pulumi()).items():
        pulumi.export(key, value)
