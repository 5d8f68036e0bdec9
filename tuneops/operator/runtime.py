"""Run the operator: kopf (watches, peering), the reconcile work queue, Prometheus metrics, JSON logs.

One active instance: with peering (the default unless --standalone) several replicas share a KopfPeering
object named by --peering; each gets a random priority, the highest runs and the others pause (kopf's
peering). `peering_crds()` renders the two CRDs peering needs, for the Helm chart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import handlers, metrics
from .kube import Kube, load_config
from .reconcile import Reconciler
from .settings import OperatorSettings
from .slot_metrics import PrometheusSlotMetrics
from .workqueue import WorkQueue

log = logging.getLogger("tuneops.operator")


@dataclass
class RunOptions:
    namespaces: list[str] = field(default_factory=list)
    clusterwide: bool = False
    standalone: bool = False
    peering_name: str = "tuneops"
    priority: int | None = None  # None = random, so replicas never tie (equal priorities all freeze)
    metrics_port: int = 8080
    liveness: str | None = "http://0.0.0.0:8081/healthz"
    log_format: str = "json"  # json | plain
    verbose: bool = False


def build(settings: OperatorSettings, kube: Kube | None = None) -> tuple[kopf.OperatorRegistry, WorkQueue]:
    """The registry with all handlers, and the queue feeding the reconcilers (not started)."""
    kube = kube or Kube()
    slot_metrics = PrometheusSlotMetrics(settings.prometheus_url) if settings.prometheus_url else None
    queue = WorkQueue(Reconciler(kube, settings, slot_metrics=slot_metrics), workers=settings.workers)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, queue, kube, parents=os.environ.get("TUNEOPS_PARENT_HANDLERS", "causes"))

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # A private registry has none of kopf's default login handlers: log in as the reconcilers do.
        config = load_config()
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
        scheme, _, token = (header or "").rpartition(" ")
        return kopf.ConnectionInfo(
            server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
            scheme=scheme or ("Bearer" if token else None), token=token or None,
            certificate_path=config.cert_file, private_key_path=config.key_file)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events say what changed; kopf's per-handler ones are noise
        settings.watching.server_timeout = 300
        settings.persistence.consistency_timeout = 5.0

    return registry, queue


def run(options: RunOptions, settings: OperatorSettings | None = None,
        stop_flag: threading.Event | asyncio.Event | None = None,
        ready_flag: threading.Event | None = None) -> None:
    """Block running the operator until stopped (SIGINT/SIGTERM, or stop_flag)."""
    settings = settings or OperatorSettings.from_env()
    kopf.configure(verbose=options.verbose,
                   log_format=kopf.LogFormat.JSON if options.log_format == "json" else kopf.LogFormat.PLAIN)
    registry, queue = build(settings)
    queue.start()
    metrics.serve(options.metrics_port, queue.depth)
    if options.standalone:
        standalone, priority = True, 0
    else:
        standalone, priority = False, options.priority if options.priority is not None else random.randint(1, 2**30)
    log.info("starting tuneops operator", extra={"namespaces": options.namespaces or "*",
                                                  "standalone": standalone, "priority": priority})
    try:
        kopf.run(registry=registry, standalone=standalone, priority=priority,
                 peering_name=None if standalone else options.peering_name,
                 clusterwide=options.clusterwide or not options.namespaces,
                 namespaces=options.namespaces, liveness_endpoint=options.liveness,
                 stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        queue.stop()


def peering_crds() -> list[dict[str, Any]]:
    """kopf.dev KopfPeering / ClusterKopfPeering CRDs (as in kopf's peering.yaml)."""
    def crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev"},
            "spec": {"scope": scope, "group": "kopf.dev",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"status": {
                             "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
        }
    return [crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"), crd("KopfPeering", "kopfpeerings", "Namespaced")]


def peering_object(name: str, namespace: str | None) -> dict[str, Any]:
    kind = "KopfPeering" if namespace else "ClusterKopfPeering"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta}
