"""Least-privilege RBAC of the operator: one list of rules, rendered as a ClusterRole (`tuneops operator rbac`).

Every verb here is one the operator calls (see reconcile.py, handlers.py, kube.py) or one kopf needs to watch
and store handler progress. No Secrets: pods get credentials through secretKeyRef/envFrom, which needs no
operator permission. `configmaps: patch` is listed only because Kubernetes forbids creating a Role that grants
more than the creator holds, and the trainer's Role grants get/patch on its progress ConfigMap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str


RULES: list[Rule] = [
    Rule("tuneops.io", ("finetunejobs", "modelversions", "modeldeployments"), ("get", "list", "watch", "patch"),
         "watch the custom resources; kopf stores handler progress in annotations"),
    Rule("tuneops.io", ("finetunejobs/status", "modelversions/status", "modeldeployments/status"), ("get", "patch"),
         "status via the status subresource"),
    Rule("tuneops.io", ("modelversions",), ("create",), "register the ModelVersion of a successful job"),
    Rule("batch", ("jobs",), ("get", "list", "watch", "create", "delete"),
         "training Jobs; a spec change deletes the superseded revision"),
    Rule("", ("pods",), ("get", "list", "watch"), "follow training pods, read their termination message"),
    Rule("", ("configmaps",), ("get", "list", "watch", "create", "patch"),
         "job spec and progress ConfigMaps (patch: needed to grant it to the trainer's Role)"),
    Rule("", ("serviceaccounts",), ("get", "create"), "the trainer's ServiceAccount"),
    Rule("rbac.authorization.k8s.io", ("roles", "rolebindings"), ("get", "create"),
         "the trainer's Role on its own progress ConfigMap"),
    Rule("", ("services",), ("get", "create", "patch"),
         "active/preview Services (selector switch) and the rendezvous headless Service"),
    Rule("apps", ("deployments",), ("get", "list", "watch", "create", "patch"), "blue/green slot Deployments"),
    Rule("autoscaling", ("horizontalpodautoscalers",), ("get", "create", "patch", "delete"), "HPA of the active slot"),
    Rule("policy", ("poddisruptionbudgets",), ("get", "create", "patch"), "PDB of the active slot"),
    Rule("", ("events",), ("create",), "Events on transitions"),
    Rule("events.k8s.io", ("events",), ("create",), "Events (new API) posted by kopf"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("get", "list", "watch"),
         "kopf discovers the resources it watches"),
    Rule("", ("namespaces",), ("get", "list", "watch"), "kopf: namespace patterns and --all-namespaces"),
    Rule("kopf.dev", ("clusterkopfpeerings", "kopfpeerings"), ("get", "list", "watch", "patch"),
         "kopf peering: one active operator among replicas"),
]


def cluster_role(name: str = "tuneops-operator") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "tuneops",
                                              "app.kubernetes.io/component": "operator"}},
        "rules": [{"apiGroups": [r.group], "resources": list(r.resources), "verbs": list(r.verbs)} for r in RULES],
    }


def cluster_role_binding(service_account: str, namespace: str, name: str = "tuneops-operator") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
