"""EKS: control plane (endpoint access from config, secrets encrypted with KMS, control-plane logs), a
system node group, GPU node groups (tainted, labelled, bounded), core add-ons and the IRSA OIDC provider."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .config import NodeGroupConfig
from .context import Context
from .network import Network
from .policy import GPU_TAINT_KEY

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
NODE_POLICIES = [
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",  # shell via SSM instead of SSH keys
]
# Node labels the operator and the charts select on.
WORKLOAD_LABEL = "tuneops.io/workload"
CAPACITY_LABEL = "tuneops.io/capacity"
GPU_LABEL = "nvidia.com/gpu.present"


@dataclass(frozen=True)
class Cluster:
    cluster: aws.eks.Cluster
    oidc_provider: aws.iam.OpenIdConnectProvider
    node_groups: dict[str, aws.eks.NodeGroup]  # by config name, the system group under "system"
    node_role: aws.iam.Role

    @property
    def oidc_issuer(self) -> pulumi.Output[str]:
        """Issuer host/path without scheme, as IAM condition keys want it."""
        return self.oidc_provider.url


def assume_role_policy(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def build_cluster(ctx: Context, network: Network, key: aws.kms.Key) -> Cluster:
    cfg = ctx.cfg
    name = cfg.cluster_name

    cluster_role = aws.iam.Role(f"{name}-cluster", assume_role_policy=assume_role_policy("eks.amazonaws.com"),
                                tags=ctx.tags(f"{name}-cluster"), opts=ctx.opts())
    aws.iam.RolePolicyAttachment(f"{name}-cluster", role=cluster_role.name,
                                 policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=ctx.opts())
    secrets_kms = aws.iam.Policy(
        f"{name}-cluster-kms", description="EKS envelope encryption of Secrets with the stack key",
        policy=key.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
            "Resource": arn}]})),
        tags=ctx.tags(f"{name}-cluster-kms"), opts=ctx.opts())
    aws.iam.RolePolicyAttachment(f"{name}-cluster-kms", role=cluster_role.name, policy_arn=secrets_kms.arn,
                                 opts=ctx.opts())

    # EKS writes control-plane logs to exactly this group; creating it first sets retention and tags.
    log_group = aws.cloudwatch.LogGroup(f"{name}-control-plane", name=f"/aws/eks/{name}/cluster",
                                        retention_in_days=cfg.log_retention_days,
                                        tags=ctx.tags(f"/aws/eks/{name}/cluster"), opts=ctx.opts())

    cluster = aws.eks.Cluster(
        name, name=name, version=cfg.kubernetes_version, role_arn=cluster_role.arn,
        vpc_config=aws.eks.ClusterVpcConfigArgs(
            subnet_ids=network.private_subnet_ids,
            endpoint_public_access=cfg.endpoint_public_access,
            endpoint_private_access=cfg.endpoint_private_access,
            public_access_cidrs=list(cfg.public_access_cidrs) if cfg.endpoint_public_access else None,
        ),
        access_config=aws.eks.ClusterAccessConfigArgs(
            authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True),
        encryption_config=aws.eks.ClusterEncryptionConfigArgs(
            resources=["secrets"], provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn)),
        enabled_cluster_log_types=CONTROL_PLANE_LOGS,
        tags=ctx.tags(name), opts=ctx.opts(depends_on=[log_group]))

    for i, principal in enumerate(cfg.cluster_admin_arns):
        entry = aws.eks.AccessEntry(f"{name}-admin-{i}", cluster_name=cluster.name, principal_arn=principal,
                                    tags=ctx.tags(f"{name}-admin-{i}"), opts=ctx.opts())
        aws.eks.AccessPolicyAssociation(
            f"{name}-admin-{i}", cluster_name=cluster.name, principal_arn=principal,
            policy_arn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=ctx.opts(depends_on=[entry]))

    oidc = aws.iam.OpenIdConnectProvider(
        f"{name}-oidc", url=cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer),
        client_id_lists=["sts.amazonaws.com"], tags=ctx.tags(f"{name}-oidc"), opts=ctx.opts())

    node_role = aws.iam.Role(f"{name}-node", assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
                             tags=ctx.tags(f"{name}-node"), opts=ctx.opts())
    attachments = [aws.iam.RolePolicyAttachment(f"{name}-node-{arn.rsplit('/', 1)[1]}", role=node_role.name,
                                                policy_arn=arn, opts=ctx.opts()) for arn in NODE_POLICIES]

    groups = {"system": _node_group(ctx, cluster, node_role, network, cfg.system_node_group, attachments)}
    for group in cfg.gpu_node_groups:
        groups[group.name] = _node_group(ctx, cluster, node_role, network, group, attachments)

    for addon in ("vpc-cni", "coredns", "kube-proxy"):
        aws.eks.Addon(f"{name}-{addon}", cluster_name=cluster.name, addon_name=addon,
                      resolve_conflicts_on_update="OVERWRITE", tags=ctx.tags(f"{name}-{addon}"),
                      opts=ctx.opts(depends_on=[groups["system"]]))
    return Cluster(cluster=cluster, oidc_provider=oidc, node_groups=groups, node_role=node_role)


def node_labels(group: NodeGroupConfig) -> dict[str, str]:
    if group.workload is None:
        return {WORKLOAD_LABEL: "system", **group.labels}
    return {WORKLOAD_LABEL: group.workload, CAPACITY_LABEL: group.capacity_type.lower().replace("_", "-"),
            GPU_LABEL: "true", **group.labels}


def _node_group(ctx: Context, cluster: aws.eks.Cluster, role: aws.iam.Role, network: Network,
                group: NodeGroupConfig, attachments: list) -> aws.eks.NodeGroup:
    cfg = ctx.cfg
    name = f"{cfg.cluster_name}-{group.name}"
    gpu = group.workload is not None
    extra_tags = {}
    if gpu:
        # The cluster autoscaler discovers groups by these tags (it reads labels/taints for scale-from-zero
        # from the EKS node group API).
        extra_tags = {"k8s.io/cluster-autoscaler/enabled": "true",
                      f"k8s.io/cluster-autoscaler/{cfg.cluster_name}": "owned"}
    return aws.eks.NodeGroup(
        name, cluster_name=cluster.name, node_group_name=name, node_role_arn=role.arn,
        subnet_ids=network.private_subnet_ids,
        instance_types=list(group.instance_types), capacity_type=group.capacity_type,
        ami_type="AL2023_x86_64_NVIDIA" if gpu else "AL2023_x86_64_STANDARD",
        disk_size=group.disk_size_gib,
        scaling_config=aws.eks.NodeGroupScalingConfigArgs(
            min_size=group.min_size, desired_size=group.desired_size, max_size=group.max_size),
        update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
        labels=node_labels(group),
        # Only pods that tolerate the GPU taint (training/serving pods the operator builds) land here.
        taints=[aws.eks.NodeGroupTaintArgs(key=GPU_TAINT_KEY, value="true", effect="NO_SCHEDULE")] if gpu else None,
        tags=ctx.tags(name, **extra_tags),
        # The autoscaler owns desired size at runtime; Pulumi must not fight it on every `up`.
        opts=ctx.opts(depends_on=attachments, ignore_changes=["scalingConfig.desiredSize"]))
