"""IAM roles for service accounts (IRSA), one per workload, each with a least-privilege policy.

Policy documents are built by pure functions from ARNs (easy to test and to check with `policy.py`); the
roles trust exactly one Kubernetes ServiceAccount through the cluster's OIDC provider."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import pulumi
import pulumi_aws as aws

from .context import Context
from .eks import Cluster
from .storage import Storage

S3_READ = ["s3:GetObject", "s3:GetObjectVersion"]
S3_WRITE = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
KMS_READ = ["kms:Decrypt", "kms:DescribeKey"]
KMS_WRITE = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"]


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str


@dataclass(frozen=True)
class Buckets:
    """Bucket ARNs and the KMS key ARN, resolved (plain strings) for the document builders."""

    datasets: str
    checkpoints: str
    models: str
    key: str


def _list(*buckets: str) -> dict:
    return {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": list(buckets)}


def _objects(sid: str, actions: list[str], *buckets: str) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": [f"{b}/*" for b in buckets]}


def _kms(actions: list[str], key: str) -> dict:
    return {"Sid": "Kms", "Effect": "Allow", "Action": actions, "Resource": key}


def _doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def operator_policy(b: Buckets) -> dict:
    # The operator only checks that checkpoints/artifacts exist (resume, ModelVersion URIs): read-only.
    return _doc(_list(b.checkpoints, b.models), _objects("Read", S3_READ, b.checkpoints, b.models),
                _kms(KMS_READ, b.key))


def training_policy(b: Buckets) -> dict:
    return _doc(
        _list(b.datasets, b.checkpoints, b.models),
        _objects("ReadDatasets", S3_READ, b.datasets),
        # Trainers rotate checkpoints (save_total_limit), so delete is granted on checkpoints only.
        _objects("Checkpoints", S3_READ + S3_WRITE + ["s3:DeleteObject"], b.checkpoints),
        _objects("WriteModels", S3_READ + S3_WRITE, b.models),
        _kms(KMS_WRITE, b.key))


def serving_policy(b: Buckets) -> dict:
    return _doc(_list(b.models), _objects("ReadModels", S3_READ, b.models), _kms(KMS_READ, b.key))


def mlflow_policy(b: Buckets) -> dict:
    # MLflow's artifact store lives under mlflow/ in the models bucket.
    return _doc(
        {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [b.models],
         "Condition": {"StringLike": {"s3:prefix": ["mlflow/*", "mlflow"]}}},
        {"Sid": "Artifacts", "Effect": "Allow", "Action": S3_READ + S3_WRITE + ["s3:DeleteObject"],
         "Resource": [f"{b.models}/mlflow/*"]},
        _kms(KMS_WRITE, b.key))


def cluster_autoscaler_policy(cluster_name: str) -> dict:
    # Describe calls do not support resource-level permissions (AWS requires "*"); the calls that change
    # capacity are limited to this cluster's node groups by their ownership tag.
    return _doc(
        {"Sid": "Describe", "Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
            "eks:DescribeNodegroup"]},
        {"Sid": "Scale", "Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}})


def irsa_trust_policy(oidc_arn: str, issuer: str, sa: ServiceAccount) -> str:
    issuer = issuer.removeprefix("https://")
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": oidc_arn}, "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{issuer}:sub": f"system:serviceaccount:{sa.namespace}:{sa.name}",
                                       f"{issuer}:aud": "sts.amazonaws.com"}}}]})


@dataclass(frozen=True)
class WorkloadRoles:
    roles: dict[str, aws.iam.Role]
    service_accounts: dict[str, ServiceAccount]

    def arn(self, workload: str) -> pulumi.Output[str]:
        return self.roles[workload].arn


def service_accounts(ctx: Context) -> dict[str, ServiceAccount]:
    charts = ctx.cfg.charts
    return {
        "operator": ServiceAccount(charts.namespace, "tuneops-operator"),
        "training": ServiceAccount(charts.workload_namespace, "tuneops-training"),
        "serving": ServiceAccount(charts.workload_namespace, "tuneops-serving"),
        "mlflow": ServiceAccount("mlflow", "mlflow"),
        "cluster-autoscaler": ServiceAccount("kube-system", "cluster-autoscaler"),
        "cloudwatch-agent": ServiceAccount("amazon-cloudwatch", "cloudwatch-agent"),
    }


def build_workload_roles(ctx: Context, cluster: Cluster, storage: Storage) -> WorkloadRoles:
    cfg = ctx.cfg
    accounts = service_accounts(ctx)
    buckets = pulumi.Output.all(storage.arn("datasets"), storage.arn("checkpoints"), storage.arn("models"),
                                storage.key.arn).apply(lambda a: Buckets(*a))
    documents: dict[str, Callable[[Buckets], dict]] = {
        "operator": operator_policy, "training": training_policy, "serving": serving_policy,
        "mlflow": mlflow_policy,
        "cluster-autoscaler": lambda _b: cluster_autoscaler_policy(cfg.cluster_name),
    }
    roles = {}
    for workload, sa in accounts.items():
        name = f"{cfg.name}-{workload}"
        trust = pulumi.Output.all(cluster.oidc_provider.arn, cluster.oidc_issuer).apply(
            lambda a, sa=sa: irsa_trust_policy(a[0], a[1], sa))
        role = aws.iam.Role(name, assume_role_policy=trust, description=f"IRSA for {sa.namespace}/{sa.name}",
                            tags=ctx.tags(name, **{"tuneops.io/workload": workload}), opts=ctx.opts())
        if workload in documents:
            policy = aws.iam.Policy(name, description=f"least privilege for {workload}",
                                    policy=buckets.apply(lambda b, f=documents[workload]: json.dumps(f(b))),
                                    tags=ctx.tags(name), opts=ctx.opts())
            arn = policy.arn
        else:  # the CloudWatch agent uses AWS's managed policy, as the add-on documents
            arn = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"
        aws.iam.RolePolicyAttachment(name, role=role.name, policy_arn=arn, opts=ctx.opts(parent=role))
        roles[workload] = role
    return WorkloadRoles(roles=roles, service_accounts=accounts)
