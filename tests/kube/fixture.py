"""Session-scoped pytest fixture `kube`: a real Kubernetes control plane.

Use from any conftest.py (re-exporting the hook builds before the first test,
outside its pytest-timeout):

    from tests.kube.fixture import kube, pytest_collection_finish  # noqa: F401

or register it once as a plugin in tests/conftest.py:

    pytest_plugins = ["tests.kube.fixture"]

The fixture builds the cluster binaries (cached, see tests/cluster/README.md),
starts etcd + kube-apiserver + kube-controller-manager + kwok, sets KUBECONFIG
(and puts kubectl/helm on PATH) for this process and its subprocesses, and
yields a `Kube` object. Everything is SIGTERMed at the end of the session.
Several conftests may import the fixture: they share one cluster.

Environment:
    TUNEOPS_SKIP_KUBE=1       skip tests that use the fixture (no build, no cluster)
    TUNEOPS_KUBE_STATE=DIR    reuse a cluster started by `devcluster.py up --state DIR`
    TUNEOPS_KUBE_JOB_PODS=... default outcome of Job pods: succeed (default), fail, hold
    TUNEOPS_KUBE_KEEP=1       keep the state dir (logs, etcd data) after the session
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.cluster import devcluster  # noqa: E402

# Pod annotation read by kwok (see tests/cluster/kwok-stages.yaml).
RESULT_ANNOTATION = "kwok.tuneops.io/result"
DELAY_ANNOTATION = "kwok.tuneops.io/delay"



def wait_for(what: str, predicate, timeout: float = 90, interval: float = 0.5):
    """Poll predicate() until it returns something truthy; return that. Errors raised by predicate() are
    retried and the last one is reported if time runs out."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"; last error: {last_exc}" if last_exc else ""))
        time.sleep(interval)

class Kube:
    """What the `kube` fixture yields."""

    def __init__(self, cluster: devcluster.Cluster):
        self.cluster = cluster
        self.kubeconfig = cluster.kubeconfig
        self.state_dir = cluster.state_dir
        self.bin_dir = cluster.paths.dir
        self.kubectl_path = cluster.paths.kubectl
        self.helm_path = cluster.paths.helm
        self.env = cluster.env

    def kubectl(self, *args, input: str | None = None, check: bool = True, timeout: float = 120):
        """Run kubectl; returns subprocess.CompletedProcess (text). Raises
        devcluster.KubectlError (a CalledProcessError with stderr in its
        message) when check is true and kubectl fails."""
        return self.cluster.kubectl(*args, input=input, check=check, timeout=timeout)

    def get(self, *args, namespace: str | None = None) -> dict:
        """`kubectl get ARGS -o json`, parsed."""
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", *args, *ns, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None):
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=manifest)

    def wait_for(self, what: str, predicate, timeout: float = 90, interval: float = 0.5):
        """Poll predicate() until it returns something truthy; return that."""
        return wait_for(what, predicate, timeout, interval)

    def create_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace (deleted by nobody: the cluster is throwaway)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        # The ServiceAccount controller must create "default" before pods can be made.
        self.wait_for(f"serviceaccount default in {name}",
                      lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0)
        return name

    def finish_pod(self, name: str, namespace: str, phase: str = "Succeeded",
                   exit_code: int | None = None, reason: str | None = None, message: str = ""):
        """Drive a pod to Succeeded or Failed, as a kubelet would: patch its
        status subresource (phase + terminated container states). kwok leaves
        a pod alone once it is no longer Running, so this is final. For Job
        pods, start the pod with annotation kwok.tuneops.io/result=hold (or the
        cluster with job_pods="hold") so kwok does not finish it first."""
        if phase not in ("Succeeded", "Failed"):
            raise ValueError("phase must be Succeeded or Failed")
        if exit_code is None:
            exit_code = 0 if phase == "Succeeded" else 1
        reason = reason or ("Completed" if phase == "Succeeded" else "Error")
        pod = self.get("pod", name, namespace=namespace)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        statuses = [{
            "name": c["name"], "image": c["image"], "ready": False, "restartCount": 0, "started": False,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message,
                                     "startedAt": now, "finishedAt": now}},
        } for c in pod["spec"]["containers"]]
        conditions = [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
                      for t in ("Ready", "ContainersReady")]
        patch = {"status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions}}
        return self.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status",
                            "--type=strategic", "-p", json.dumps(patch))


# One cluster per process, however many conftests import the fixture.
_state: dict = {"kube": None, "users": 0, "owned": False, "build_error": None}


def pytest_collection_finish(session):
    """Build before the first test runs, so a cold build (~20 min) does not
    count against that test's pytest-timeout. Needs this module to be a
    plugin (pytest_plugins) or this hook re-exported from a conftest."""
    if os.environ.get("TUNEOPS_SKIP_KUBE") == "1" or os.environ.get("TUNEOPS_KUBE_STATE"):
        return
    if not any("kube" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    if session.config.option.collectonly:
        return
    if not devcluster.is_built():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("tuneops: building the test Kubernetes cluster from Go modules "
                                f"(cold: ~20 min on 2 cores; cached in {devcluster.cache_root()})")
    try:
        devcluster.build()
    except devcluster.BuildError as e:
        _state["build_error"] = e  # reported by the fixture, per test


def _acquire() -> Kube:
    if _state["kube"] is None:
        reuse = os.environ.get("TUNEOPS_KUBE_STATE")
        if reuse:
            cluster = devcluster.attach(reuse)
            if not cluster.alive():
                raise devcluster.ClusterError(f"TUNEOPS_KUBE_STATE={reuse}: cluster is not running")
            _state["owned"] = False
        else:
            cluster = devcluster.start(job_pods=os.environ.get("TUNEOPS_KUBE_JOB_PODS", "succeed"))
            _state["owned"] = True
            atexit.register(devcluster.stop, cluster)  # safety net if teardown never runs
        _state["kube"] = Kube(cluster)
        _state["saved_env"] = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        os.environ["PATH"] = f"{cluster.paths.dir}{os.pathsep}{os.environ.get('PATH', '')}"
    _state["users"] += 1
    return _state["kube"]


def _release() -> None:
    _state["users"] -= 1
    if _state["users"] == 0 and _state["kube"] is not None:
        kube, _state["kube"] = _state["kube"], None
        for k, v in _state.pop("saved_env", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if _state["owned"]:
            devcluster.stop(kube.cluster)
            atexit.unregister(devcluster.stop)


@pytest.fixture(scope="session")
def kube():
    """A running Kubernetes control plane; see the module docstring."""
    if os.environ.get("TUNEOPS_SKIP_KUBE") == "1":
        pytest.skip("TUNEOPS_SKIP_KUBE=1")
    if _state["build_error"] is not None:
        pytest.fail(f"cannot build the test cluster (set TUNEOPS_SKIP_KUBE=1 to skip): "
                    f"{_state['build_error']}", pytrace=False)
    try:
        k = _acquire()
    except devcluster.BuildError as e:
        pytest.fail(f"cannot build the test cluster (set TUNEOPS_SKIP_KUBE=1 to skip): {e}", pytrace=False)
    except devcluster.ClusterError as e:
        pytest.fail(f"test cluster did not start: {e}", pytrace=False)
    try:
        yield k
    finally:
        _release()
