"""Progress, pod -> operator (docs/dev/contracts.md, "Progress").

`progress.json` in the output dir (atomic) on every log step; in a pod, the same JSON in a ConfigMap's
`data.progress` (stdlib HTTPS with the pod's ServiceAccount token: the training image needs no kubernetes
client); at exit, `result.json` and the container termination message (< 4 KiB).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_LIMIT = 4096

# Trainer log keys -> contract keys (camelCase, as the operator reads them).
METRIC_NAMES = {
    "loss": "loss", "eval_loss": "evalLoss", "learning_rate": "learningRate", "grad_norm": "gradNorm",
    "tokens_per_second": "tokensPerSecond", "mean_token_accuracy": "meanTokenAccuracy",
    "eval_mean_token_accuracy": "evalMeanTokenAccuracy", "train_loss": "trainLoss",
}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def contract_metrics(logs: dict[str, Any]) -> dict[str, float]:
    return {METRIC_NAMES[k]: float(v) for k, v in logs.items() if k in METRIC_NAMES and isinstance(v, (int, float))}


class ConfigMapPatcher:
    """PATCHes `data.progress` of one ConfigMap over the in-cluster API (merge patch)."""

    def __init__(self, name: str, namespace: str, *, api: str | None = None, token_file: Path | None = None,
                 ca_file: Path | None = None, timeout: float = 5.0):
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.url = f"{api or f'https://{host}:{port}'}/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.token_file = token_file or SERVICE_ACCOUNT_DIR / "token"
        ca = ca_file or SERVICE_ACCOUNT_DIR / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca)) if Path(ca).is_file() else None
        self.timeout = timeout

    @classmethod
    def from_env(cls) -> "ConfigMapPatcher | None":
        name = os.environ.get("TUNEOPS_PROGRESS_CONFIGMAP")
        namespace = os.environ.get("POD_NAMESPACE")
        if not name or not namespace:
            return None
        return cls(name, namespace)

    def patch(self, progress_json: str) -> None:
        body = json.dumps({"data": {"progress": progress_json}}).encode()
        request = urllib.request.Request(self.url, data=body, method="PATCH", headers={
            "Content-Type": "application/merge-patch+json",
            "Authorization": f"Bearer {Path(self.token_file).read_text().strip()}",
        })
        with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
            response.read()


class ProgressReporter:
    """Writes progress.json (and the ConfigMap in a pod). Reporting never fails the training: a flaky API
    server costs a progress update, not a run."""

    def __init__(self, output_dir: Path, *, patcher: ConfigMapPatcher | None = None, min_interval_s: float = 2.0):
        self.path = Path(output_dir) / "progress.json"
        self.patcher = patcher if patcher is not None else ConfigMapPatcher.from_env()
        self.min_interval_s = min_interval_s
        self._last_patch = 0.0
        self.state: dict[str, Any] = {"phase": "Pending", "step": 0, "totalSteps": None, "epoch": 0.0,
                                      "metrics": {}, "lastCheckpoint": None, "mlflowRunId": None}

    def update(self, *, force: bool = False, metrics: dict[str, float] | None = None, **fields: Any) -> dict:
        if metrics:
            self.state["metrics"] = {**self.state["metrics"], **metrics}
        self.state.update({k: v for k, v in fields.items() if v is not None})
        self.state["updated"] = now_rfc3339()
        write_json_atomic(self.path, self.state)
        if self.patcher and (force or time.monotonic() - self._last_patch >= self.min_interval_s):
            try:
                self.patcher.patch(json.dumps(self.state, sort_keys=True))
                self._last_patch = time.monotonic()
            except Exception as exc:  # noqa: BLE001
                log.warning("could not patch progress ConfigMap %s: %s", self.patcher.url, exc)
        return self.state


def write_result(output_dir: Path, result: dict[str, Any], *, termination_log: Path = TERMINATION_LOG) -> None:
    """result.json in the output dir, and a < 4 KiB copy as the container termination message."""
    write_json_atomic(Path(output_dir) / "result.json", result)
    if termination_log.exists():  # the kubelet creates it in pods; elsewhere there is nothing to write
        try:
            termination_log.write_text(termination_message(result))
        except OSError as exc:
            log.warning("could not write termination message %s: %s", termination_log, exc)


def termination_message(result: dict[str, Any]) -> str:
    """The result as compact JSON under the kubelet's 4 KiB limit: drop bulky parts first, never truncate
    mid-JSON (the operator must be able to parse it)."""
    text = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
    trimmed = dict(result)
    for key in ("evaluation", "metrics", "message"):
        if len(text.encode()) < TERMINATION_LIMIT:
            break
        if key == "evaluation" and isinstance(trimmed.get(key), dict):
            trimmed[key] = {k: trimmed[key][k] for k in ("verdict", "primaryMetric", "score") if k in trimmed[key]}
        elif key == "message" and trimmed.get(key):
            trimmed[key] = str(trimmed[key])[:1000]
        else:
            trimmed.pop(key, None)
        text = json.dumps(trimmed, separators=(",", ":"), sort_keys=True, default=str)
    return text
