"""Git write-back after an automatic rollback: commit the reverted spec.activeVersion so Git and the cluster agree.

Pure part: `set_active_version` edits one ModelDeployment's `spec.activeVersion` in a YAML file as a minimal
textual change (PyYAML's node marks locate the scalar; comments, quoting, key order and every other byte stay
as they were), and `commit_message` explains the rollback. I/O part: `push_revert` runs the git CLI: a shallow
clone of the branch, the edit, a commit, a push; a rejected push (someone pushed first) re-fetches the new tip
and re-applies the edit on it. Idempotent: if the file already names the version we roll back to, nothing is
committed. If Git names a third version (someone already chose), it is left alone.

Credentials come from the Secret named by spec.gitWriteBack.secretRef (read by the reconciler): `token` or
`username` + `password` for https (handed to git through GIT_ASKPASS and environment variables, never on a
command line or in a URL), `ssh-privatekey` (+ optional `known_hosts`) for ssh. They are never logged, and are
scrubbed from error messages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuneops.api.modeldeployment import GitWriteBackSpec

PUSH_ATTEMPTS = 5
GIT_TIMEOUT = 120  # seconds per git command
TRAILER = "Tuneops-Rollback"


class WriteBackError(RuntimeError):
    """The write-back could not be done (bad file, auth, network); the message is safe to show."""


@dataclass(frozen=True)
class WriteBack:
    """What to write back: produced by the planner, carried out by the reconciler with `push_revert`."""

    git: GitWriteBackSpec
    name: str
    namespace: str
    from_version: str
    to_version: str
    message: str


@dataclass(frozen=True)
class Edit:
    text: str
    old_version: str


@dataclass(frozen=True)
class PushResult:
    state: str  # Committed | UpToDate | Skipped
    commit: str  # the commit that names to_version (ours, or the tip that already did)
    message: str
    pushes: int = 0  # push attempts (>1 after a rejected push)


# ---------------------------------------------------------------------------------------------------------
# Pure part

def _scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _get(mapping: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for k, v in mapping.value:
        if _scalar(k) == key:
            return v
    return None


def find_active_version(text: str, name: str, namespace: str | None = None) -> yaml.ScalarNode:
    """The `spec.activeVersion` scalar node of ModelDeployment `name` in a (multi-document) YAML text."""
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise WriteBackError(f"not valid YAML: {exc}") from None
    found = []
    for doc in documents:
        if doc is None or _scalar(_get(doc, "kind")) != "ModelDeployment":
            continue
        meta = _get(doc, "metadata")
        doc_ns = _scalar(_get(meta, "namespace")) if meta is not None else None
        if _scalar(_get(meta, "name")) == name and (doc_ns is None or namespace is None or doc_ns == namespace):
            found.append(doc)
    if not found:
        where = f"{namespace}/{name}" if namespace else name
        raise WriteBackError(f"no ModelDeployment {where} in the file (kind ModelDeployment, metadata.name {name})")
    if len(found) > 1:
        raise WriteBackError(f"the file holds {len(found)} ModelDeployments named {name}")
    node = _get(_get(found[0], "spec"), "activeVersion")
    if not isinstance(node, yaml.ScalarNode):
        raise WriteBackError(f"ModelDeployment {name} has no scalar spec.activeVersion in the file")
    return node


def set_active_version(text: str, name: str, version: str, namespace: str | None = None) -> Edit:
    """`text` with ModelDeployment `name`'s spec.activeVersion set to `version`, nothing else changed."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", version):
        raise WriteBackError(f"not a ModelVersion name: {version!r}")
    node = find_active_version(text, name, namespace)
    style = node.style if node.style in ("'", '"') else ""
    start, end = node.start_mark.index, node.end_mark.index
    return Edit(text=text[:start] + f"{style}{version}{style}" + text[end:], old_version=node.value)


def commit_message(name: str, namespace: str, from_version: str, to_version: str, reason: str,
                   when: str | None, watch: dict[str, Any] | None) -> str:
    """Subject + body: which versions, which check failed, with the measured values."""
    measured = []
    for key, label in (("errorRate", "error rate"), ("p95LatencyMs", "p95 latency (ms)")):
        if watch and watch.get(key) is not None:
            measured.append(f"  {label}: {watch[key]:g}")
    lines = [
        f"rollback {namespace}/{name}: {from_version} -> {to_version}",
        "",
        f"{from_version} failed its post-promotion checks: {reason}.",
        f"The tuneops operator switched traffic back to {to_version}" + (f" at {when}." if when else "."),
        "This commit reverts spec.activeVersion so Git and the cluster agree again.",
    ]
    if measured:
        lines += ["", "Measured on the live traffic of " + from_version + ":", *measured]
    lines += ["", f"{TRAILER}: {namespace}/{name} from={from_version} to={to_version}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# I/O part

@dataclass
class _Git:
    cwd: Path
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["git", *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              input=stdin, timeout=GIT_TIMEOUT)
        if check and proc.returncode != 0:
            command = next((a for a in args if not a.startswith("-") and "=" not in a), "")
            raise WriteBackError(self.scrub(f"git {command} failed ({proc.returncode}): "
                                            f"{(proc.stderr or proc.stdout).strip()[-800:]}"))
        return proc


def _environment(home: Path, credentials: dict[str, str], repo_url: str) -> tuple[dict[str, str], list[str]]:
    """A clean git environment: no user/system config, no prompts; credentials only via askpass/ssh files."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE",
                                                        "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", GIT_CONFIG_GLOBAL=os.devnull)
    secrets: list[str] = []
    password = credentials.get("token") or credentials.get("password")
    if password and repo_url.startswith(("https://", "http://")):
        askpass = home / "askpass.sh"
        askpass.write_text('#!/bin/sh\ncase "$1" in\n  Username*) printf "%s\\n" "$TUNEOPS_GIT_USERNAME" ;;\n'
                           '  *) printf "%s\\n" "$TUNEOPS_GIT_PASSWORD" ;;\nesac\n')
        askpass.chmod(0o700)
        env.update(GIT_ASKPASS=str(askpass), TUNEOPS_GIT_PASSWORD=password,
                   TUNEOPS_GIT_USERNAME=credentials.get("username") or "x-access-token")
        secrets.append(password)
    key = credentials.get("ssh-privatekey") or credentials.get("identity")
    if key:
        key_file = home / "id_key"
        key_file.write_text(key if key.endswith("\n") else key + "\n")
        key_file.chmod(0o600)
        ssh = ["ssh", "-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        if credentials.get("known_hosts"):
            hosts = home / "known_hosts"
            hosts.write_text(credentials["known_hosts"])
            ssh += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
        else:
            ssh += ["-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=accept-new"]
        env["GIT_SSH_COMMAND"] = " ".join(ssh)
        secrets.append(key.strip())
    return env, secrets


def _rejected(proc: subprocess.CompletedProcess) -> bool:
    out = (proc.stderr or "") + (proc.stdout or "")
    return proc.returncode != 0 and any(s in out for s in ("[rejected]", "non-fast-forward", "fetch first"))


def push_revert(request: WriteBack, credentials: dict[str, str] | None = None,
                workdir: Path | None = None) -> PushResult:
    """Commit request.to_version into the file on the branch and push it (see the module docstring)."""
    spec = request.git
    tmp = Path(tempfile.mkdtemp(prefix="tuneops-git-", dir=workdir))
    try:
        home = tmp / "home"
        home.mkdir(mode=0o700)
        env, secrets = _environment(home, credentials or {}, spec.repo_url)
        repo = tmp / "repo"
        git = _Git(cwd=tmp, env=env, secrets=secrets)
        git.run("-c", "credential.helper=", "clone", "--quiet", "--depth", "1", "--single-branch",
                "--branch", spec.branch, "--", spec.repo_url, str(repo))
        git.cwd = repo
        for key, value in (("credential.helper", ""), ("user.name", spec.author_name),
                           ("user.email", spec.author_email), ("commit.gpgsign", "false")):
            git.run("config", key, value)
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            if attempt > 1:  # someone pushed first: start again from their tip
                git.run("fetch", "--quiet", "--depth", "1", "origin", spec.branch)
                git.run("reset", "--quiet", "--hard", "FETCH_HEAD")
            path = repo / spec.path
            if not path.is_file() or not path.resolve().is_relative_to(repo.resolve()):
                raise WriteBackError(f"{spec.path} not found on branch {spec.branch}")
            text = path.read_bytes().decode("utf-8")  # bytes: keep the file's line endings as they are
            edit = set_active_version(text, request.name, request.to_version, request.namespace)
            head = git.run("rev-parse", "HEAD").stdout.strip()
            if edit.old_version == request.to_version:
                return PushResult("UpToDate", head, f"{spec.path} already names {request.to_version}", attempt - 1)
            if edit.old_version != request.from_version:
                return PushResult("Skipped", head, f"{spec.path} names {edit.old_version}, not {request.from_version}: "
                                  "left as is", attempt - 1)
            path.write_bytes(edit.text.encode("utf-8"))
            git.run("add", "--", spec.path)
            git.run("commit", "--quiet", "--no-verify", "-F", "-", stdin=request.message)
            commit = git.run("rev-parse", "HEAD").stdout.strip()
            proc = git.run("push", "--porcelain", "origin", f"HEAD:refs/heads/{spec.branch}", check=False)
            if proc.returncode == 0:
                return PushResult("Committed", commit, f"pushed {commit[:12]} to {spec.branch}", attempt)
            if not _rejected(proc):
                raise WriteBackError(git.scrub(f"git push failed ({proc.returncode}): "
                                               f"{(proc.stderr or proc.stdout).strip()[-800:]}"))
        raise WriteBackError(f"push rejected {PUSH_ATTEMPTS} times (the branch keeps moving)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

