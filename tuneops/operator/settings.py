"""Operator-wide settings: images and defaults that are not part of any resource's spec (read from env)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorSettings:
    training_image: str = "ghcr.io/tuneops/tuneops-train:0.1.0"
    serve_image: str = "ghcr.io/tuneops/tuneops-serve:0.1.0"
    tgi_image: str = "ghcr.io/huggingface/text-generation-inference:3.3.6"
    mlflow_uri: str | None = None  # default tracking URI for jobs that do not set one
    # The operator pod usually cannot see artifact paths (they live on PVCs or object stores), so local paths
    # are only checked when it can, i.e. when this is on (tests, single-node setups with a shared volume).
    verify_local_artifacts: bool = False
    workers: int = 4  # reconcile worker threads
    rendezvous_port: int = 29500
    # Extra annotations on training pods (e.g. cluster-autoscaler safe-to-evict, sidecar opt-outs).
    training_pod_annotations: dict[str, str] = field(default_factory=dict)
    # Prometheus HTTP API for the preview metric gates and post-promotion checks (None: metrics not measured).
    prometheus_url: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "OperatorSettings":
        env = dict(os.environ if env is None else env)
        base = cls()
        return cls(
            training_image=env.get("TUNEOPS_TRAINING_IMAGE", base.training_image),
            serve_image=env.get("TUNEOPS_SERVE_IMAGE", base.serve_image),
            tgi_image=env.get("TUNEOPS_TGI_IMAGE", base.tgi_image),
            mlflow_uri=env.get("TUNEOPS_MLFLOW_URI") or None,
            verify_local_artifacts=env.get("TUNEOPS_VERIFY_LOCAL_ARTIFACTS", "") in ("1", "true", "yes"),
            workers=int(env.get("TUNEOPS_OPERATOR_WORKERS", base.workers)),
            training_pod_annotations=_json_map(env, "TUNEOPS_TRAINING_POD_ANNOTATIONS"),
            prometheus_url=env.get("TUNEOPS_PROMETHEUS_URL") or None,
        )


def _json_map(env: dict[str, str], name: str) -> dict[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{name}: must be a JSON object of strings")
    return value
