"""In-cluster software installed with pulumi-kubernetes Helm releases: the NVIDIA device plugin, the
cluster autoscaler, Argo CD, MLflow and the tuneops chart (pointed at this stack's ECR images)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from .context import Context
from .database import MLFLOW_DB, MLFLOW_USER
from .eks import Cluster, GPU_LABEL
from .iam import WorkloadRoles
from .policy import GPU_TAINT_KEY
from .storage import Storage

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
REPOS = {
    "nvidia-device-plugin": "https://nvidia.github.io/k8s-device-plugin",
    "cluster-autoscaler": "https://kubernetes.github.io/autoscaler",
    "argo-cd": "https://argoproj.github.io/argo-helm",
    "mlflow": "https://community-charts.github.io/helm-charts",
}


@dataclass(frozen=True)
class Apps:
    provider: k8s.Provider
    releases: dict[str, k8s.helm.v3.Release]
    # Also exported, for when Argo CD owns the tuneops release (paste into the Application's valuesObject).
    tuneops_values: pulumi.Output[dict]


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no long-lived credentials in state)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster_name,
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "users": [{"name": cluster_name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region]}}}],
    })


def image_ref(repository_url: str, tag: str) -> dict[str, str]:
    return {"repository": repository_url, "tag": tag}


def tuneops_values(*, images: dict[str, str], tag: str, operator_sa: str, operator_role_arn: str,
                   mlflow_uri: str) -> dict[str, Any]:
    """Values for charts/tuneops (checked against its values.schema.json in tests): this stack's ECR images,
    the operator's IRSA role on its ServiceAccount, MLflow as default tracking. No storage credentials:
    pods get S3 access from their IRSA ServiceAccounts, not from Secrets."""
    runtime = f"{images['runtime']}:{tag}"
    return {
        "operator": {"image": image_ref(images["operator"], tag)},
        "serviceAccount": {"create": True, "name": operator_sa,
                           "annotations": {IRSA_ANNOTATION: operator_role_arn}},
        "defaults": {"trainingImage": runtime, "servingImages": {"builtin": runtime}, "mlflowUri": mlflow_uri},
    }


def build_apps(ctx: Context, cluster: Cluster, storage: Storage, roles: WorkloadRoles,
               repos: dict[str, aws.ecr.Repository], database: aws.rds.Instance | None) -> Apps:
    cfg = ctx.cfg
    charts = cfg.charts
    eks = cluster.cluster
    config = pulumi.Output.all(eks.name, eks.endpoint, eks.certificate_authority.data).apply(
        lambda a: kubeconfig(a[0], a[1], a[2], cfg.region))
    provider = k8s.Provider(f"{cfg.name}-k8s", kubeconfig=config,
                            opts=pulumi.ResourceOptions(depends_on=list(cluster.node_groups.values())))
    k8s_opts = pulumi.ResourceOptions(provider=provider)
    labels = {"app.kubernetes.io/part-of": cfg.project, "tuneops.io/stack": cfg.stack}
    namespaces = {ns: k8s.core.v1.Namespace(f"{cfg.name}-ns-{ns}", metadata={"name": ns, "labels": labels},
                                            opts=k8s_opts)
                  for ns in sorted({charts.namespace, charts.workload_namespace})}
    # Training and serving pods get S3 access by running under these IRSA-annotated ServiceAccounts.
    for workload in ("training", "serving"):
        sa = roles.service_accounts[workload]
        k8s.core.v1.ServiceAccount(
            f"{cfg.name}-sa-{workload}", opts=pulumi.ResourceOptions(provider=provider,
                                                                     depends_on=[namespaces[sa.namespace]]),
            metadata={"name": sa.name, "namespace": sa.namespace, "labels": labels,
                      "annotations": {IRSA_ANNOTATION: roles.arn(workload)}})

    releases: dict[str, k8s.helm.v3.Release] = {}

    def release(name: str, namespace: str, values: Any, *, chart: str, version: str | None = None,
                repo: str | None = None, depends_on: list | None = None) -> k8s.helm.v3.Release:
        releases[name] = k8s.helm.v3.Release(
            f"{cfg.name}-{name}", name=name, namespace=namespace, create_namespace=True, chart=chart,
            version=version, repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo) if repo else None,
            values=values, atomic=True, cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(provider=provider, depends_on=depends_on or []))
        return releases[name]

    release("nvidia-device-plugin", "kube-system", {
        "nodeSelector": {GPU_LABEL: "true"}, "tolerations": [GPU_TOLERATION]},
        chart="nvidia-device-plugin", version=charts.device_plugin_version, repo=REPOS["nvidia-device-plugin"])
    release("cluster-autoscaler", "kube-system", {
        "cloudProvider": "aws", "awsRegion": cfg.region,
        "autoDiscovery": {"clusterName": cfg.cluster_name},
        "rbac": {"serviceAccount": {"name": "cluster-autoscaler",
                                    "annotations": {IRSA_ANNOTATION: roles.arn("cluster-autoscaler")}}},
        # GPU nodes are expensive: give them back soon after the last job finishes.
        "extraArgs": {"balance-similar-node-groups": True, "skip-nodes-with-system-pods": False,
                      "scale-down-unneeded-time": "5m", "expander": "priority,least-waste"},
    }, chart="cluster-autoscaler", version=charts.cluster_autoscaler_version, repo=REPOS["cluster-autoscaler"])
    argocd = release("argocd", "argocd", {
        "global": {"nodeSelector": {"tuneops.io/workload": "system"}},
        "configs": {"params": {"server.insecure": False}},
    }, chart="argo-cd", version=charts.argocd_version, repo=REPOS["argo-cd"])

    mlflow_uri = "http://mlflow.mlflow.svc.cluster.local:80"
    models_bucket = storage.buckets["models"].bucket
    mlflow_values: dict[str, Any] = {
        "serviceAccount": {"create": True, "name": "mlflow", "annotations": {IRSA_ANNOTATION: roles.arn("mlflow")}},
        "artifactRoot": {"s3": {"enabled": True, "bucket": models_bucket, "path": "mlflow"}},
    }
    if database is not None:
        mlflow_values["backendStore"] = {"databaseMigration": True, "postgres": {
            "enabled": True, "host": database.address, "port": 5432, "database": MLFLOW_DB,
            "user": MLFLOW_USER, "password": cfg.mlflow_db_password}}
    release("mlflow", "mlflow", mlflow_values, chart="mlflow", version=charts.mlflow_version, repo=REPOS["mlflow"])

    images = {c: r.repository_url for c, r in repos.items()}
    values = pulumi.Output.all(images=images, role=roles.arn("operator")).apply(
        lambda a: tuneops_values(images=a["images"], tag=cfg.image_tag,
                                 operator_sa=roles.service_accounts["operator"].name, operator_role_arn=a["role"],
                                 mlflow_uri=mlflow_uri))
    if charts.install_tuneops:
        # A local path: the chart ships in this repo (charts/tuneops), so infra and chart version together.
        release("tuneops", charts.namespace, values, chart=charts.tuneops_chart_path,
                depends_on=[argocd, releases["nvidia-device-plugin"], *namespaces.values()])
    return Apps(provider=provider, releases=releases, tuneops_values=values)
