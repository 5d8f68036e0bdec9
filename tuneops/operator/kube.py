"""A thin REST layer over the kubernetes client: plain dicts in and out, one table of resource paths.

The typed kubernetes models would round-trip every manifest through generated classes; the builders already
produce wire-format dicts, so this sends them as JSON. Everything the operator calls is listed in RESOURCES,
which is also where the RBAC rules come from (see rbac.py).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes

from .meta import Event, rfc3339


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str

    @property
    def prefix(self) -> str:
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"


RESOURCES: dict[str, Resource] = {
    "ConfigMap": Resource("", "v1", "configmaps"),
    "Pod": Resource("", "v1", "pods"),
    "Service": Resource("", "v1", "services"),
    "ServiceAccount": Resource("", "v1", "serviceaccounts"),
    "Event": Resource("", "v1", "events"),
    "Job": Resource("batch", "v1", "jobs"),
    "Deployment": Resource("apps", "v1", "deployments"),
    "HorizontalPodAutoscaler": Resource("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Resource("policy", "v1", "poddisruptionbudgets"),
    "Role": Resource("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "FineTuneJob": Resource("tuneops.io", "v1alpha1", "finetunejobs"),
    "ModelVersion": Resource("tuneops.io", "v1alpha1", "modelversions"),
    "ModelDeployment": Resource("tuneops.io", "v1alpha1", "modeldeployments"),
}


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str):
        self.status = status
        try:
            detail = json.loads(body).get("message", body)
        except ValueError:
            detail = body
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")


class Kube:
    """Synchronous, thread-safe (urllib3 pool) access to the apiserver for the reconcilers."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, field_manager: str = "tuneops-operator"):
        if api_client is None:
            api_client = kubernetes.client.ApiClient(load_config())
        self.api = api_client
        self.field_manager = field_manager
        self._lock = threading.Lock()

    # -- raw --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        url_path = path + ("?" + urlencode(query) if query else "")
        method_, url, headers, body_, post = self.api.param_serialize(
            method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = self.api.call_api(method_, url, headers, body_, post, _request_timeout=30)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, method, path, data.decode(errors="replace") if data else "")
        return json.loads(data) if data else None

    @staticmethod
    def path(kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        res = RESOURCES[kind]
        out = res.prefix + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{res.plural}"
        if name:
            out += f"/{quote(name)}"
        if sub:
            out += f"/{sub}"
        return out

    # -- verbs ------------------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, selector: dict[str, str] | None = None) -> list[dict]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else None
        return self.request("GET", self.path(kind, namespace), query=query).get("items", [])

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create; if it already exists (a retried reconcile), return the existing object. (obj, created)."""
        ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        try:
            return self.request("POST", self.path(obj["kind"], ns), body=obj,
                                query={"fieldManager": self.field_manager}), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = self.get(obj["kind"], ns, name)
        if existing is None:  # deleted in between: let the next reconcile retry
            raise ApiError(409, "POST", self.path(obj["kind"], ns), f"{name} exists and vanished")
        return existing, False

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None) -> dict:
        return self.request("PATCH", self.path(kind, namespace, name, sub), body=patch,
                            query={"fieldManager": self.field_manager},
                            content_type="application/merge-patch+json")

    def ensure(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or merge-patch what we own (labels, annotations, spec) when it differs. Idempotent."""
        current, created = self.create(obj)
        if created:
            return current
        want = {"metadata": {k: obj["metadata"][k] for k in ("labels", "annotations") if k in obj["metadata"]}}
        for key in ("spec", "data", "rules", "subjects"):
            if key in obj:
                want[key] = obj[key]
        if _contains(current, want):
            return current
        return self.patch(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], want)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", self.path(kind, namespace, name), body={"propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict:
        return self.patch(kind, namespace, name, {"status": status}, sub="status")

    def post_event(self, owner: dict[str, Any], event: Event, component: str = "tuneops-operator") -> None:
        """A core/v1 Event on `owner` (kubectl describe shows it). Best effort: events must not fail reconciles."""
        meta = owner["metadata"]
        now = datetime.now(timezone.utc)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": component}, "reportingComponent": component,
            "reportingInstance": component, "firstTimestamp": rfc3339(now), "lastTimestamp": rfc3339(now),
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": event.reason, "count": 1,
        }
        try:
            self.request("POST", self.path("Event", meta["namespace"]), body=body)
        except ApiError:
            pass


def _contains(current: Any, want: Any) -> bool:
    """Whether `current` already has every value of `want` (the apiserver adds defaults; those don't count)."""
    if isinstance(want, dict):
        return isinstance(current, dict) and all(_contains(current.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(current, list) and len(current) == len(want) and all(
            _contains(c, w) for c, w in zip(current, want))
    return current == want or (isinstance(want, (int, float)) and str(current) == str(want))


def load_config() -> kubernetes.client.Configuration:
    """In-cluster config in a pod, else $KUBECONFIG / ~/.kube/config."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        # $KUBECONFIG read now, not when kubernetes was imported (its default is frozen at import time).
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=config)
    config.connection_pool_maxsize = 32
    return config
