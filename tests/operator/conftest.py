"""Fixtures: the real control plane (tests/kube) and the operator running in-process against it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.kube.fixture import RESULT_ANNOTATION, kube, pytest_collection_finish, wait_for  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
# Training pods stay Running until a test finishes them (as the kubelet would), with a termination message.
HOLD = {RESULT_ANNOTATION: "hold"}
NS_PREFIX = "op"


def apply_crds(kubectl) -> None:
    """Apply crds/*.yaml as committed (server-side: large CRDs overflow client-side apply's annotation)."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


@pytest.fixture(scope="session")
def crds(kube):  # noqa: F811
    apply_crds(kube.kubectl)
    for name in ("finetunejobs", "modelversions", "modeldeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}.tuneops.io", "--timeout=60s")
    return kube


@pytest.fixture(scope="session")
def operator(crds):
    """The operator, in a thread of this process, watching namespaces `op-*` (kopf standalone)."""
    from tuneops.operator.runtime import RunOptions, run
    from tuneops.operator.settings import OperatorSettings

    settings = OperatorSettings(training_image="tuneops-train:test", verify_local_artifacts=True,
                                training_pod_annotations=HOLD, workers=4)
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def main():
        try:
            run(RunOptions(namespaces=[f"{NS_PREFIX}-*"], standalone=True, metrics_port=0, liveness=None,
                           log_format="plain"), settings, stop_flag=stop, ready_flag=ready)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the fixture
            errors.append(exc)

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError(f"operator did not start: {errors}")
    yield crds
    stop.set()
    thread.join(30)


@pytest.fixture
def ns(operator):
    return operator.create_namespace(NS_PREFIX)


def get_json(kube, *args, namespace: str | None = None):  # noqa: F811
    res = kube.kubectl("get", *args, *(["-n", namespace] if namespace else []), "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def ftj_status(kube, ns: str, name: str) -> dict:  # noqa: F811
    return (get_json(kube, "ftj", name, namespace=ns) or {}).get("status") or {}


def wait(what: str, predicate, timeout: float = 60, interval: float = 0.3):
    return wait_for(what, predicate, timeout, interval)
