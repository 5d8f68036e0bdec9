"""Git write-back: the YAML edit (pure) and push_revert against real local bare repositories (file://, git://)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tuneops.api.modeldeployment import GitWriteBackSpec
from tuneops.operator import gitops_writeback as gw
from tuneops.operator.gitops_writeback import WriteBack, WriteBackError, push_revert, set_active_version

MANIFEST = """\
# Support bot: promoted by editing activeVersion (reviewed PRs only).
apiVersion: v1
kind: ConfigMap
metadata: {name: bot-notes}
data:
  activeVersion: not-this-one
---
apiVersion: tuneops.io/v1alpha1
kind: ModelDeployment
metadata:
  name: bot          # the public endpoint
  namespace: ml
spec:
  model: support-bot
  activeVersion: "bot-v2"   # promoted 2026-11-25 (PR #42)
  previewVersion: bot-v3
  replicas: 2
  promotion:
    scaleDownDelaySeconds: 600
"""


# ---------------------------------------------------------------------------------------------------------
# Pure edit

def test_edit_changes_only_active_version_keeping_comments_and_quotes():
    edit = set_active_version(MANIFEST, "bot", "bot-v1", namespace="ml")
    assert edit.old_version == "bot-v2"
    old_lines, new_lines = MANIFEST.splitlines(), edit.text.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert len(old_lines) == len(new_lines)
    assert changed == [('  activeVersion: "bot-v2"   # promoted 2026-11-25 (PR #42)',
                        '  activeVersion: "bot-v1"   # promoted 2026-11-25 (PR #42)')]
    assert set_active_version(edit.text, "bot", "bot-v1").text == edit.text  # idempotent


def test_edit_plain_and_flow_styles():
    assert set_active_version("kind: ModelDeployment\nmetadata: {name: a}\nspec: {activeVersion: a-v1, model: m}\n",
                              "a", "a-v10").text == "kind: ModelDeployment\nmetadata: {name: a}\nspec: {activeVersion: a-v10, model: m}\n"
    text = "kind: ModelDeployment\nmetadata:\n  name: a\nspec:\n  activeVersion: 'a-v1'\n"
    assert set_active_version(text, "a", "a-v0").text == text.replace("'a-v1'", "'a-v0'")


@pytest.mark.parametrize("name,namespace,needle", [
    ("other", None, "no ModelDeployment other"),
    ("bot", "prod", "no ModelDeployment prod/bot"),
])
def test_edit_refuses_a_file_holding_another_deployment(name, namespace, needle):
    with pytest.raises(WriteBackError, match=needle):
        set_active_version(MANIFEST, name, "bot-v1", namespace=namespace)


def test_edit_errors_name_the_problem():
    with pytest.raises(WriteBackError, match="no scalar spec.activeVersion"):
        set_active_version("kind: ModelDeployment\nmetadata: {name: a}\nspec: {model: m}\n", "a", "a-v1")
    with pytest.raises(WriteBackError, match="not valid YAML"):
        set_active_version("kind: [unclosed\n", "a", "a-v1")
    with pytest.raises(WriteBackError, match="not a ModelVersion name"):
        set_active_version(MANIFEST, "bot", "v1\nspec: evil")


def test_askpass_hands_credentials_through_env_only(tmp_path):
    env, secrets = gw._environment(tmp_path, {"username": "bot", "token": "s3cr3t-t0ken"}, "https://git.example/r.git")
    script = Path(env["GIT_ASKPASS"])
    assert "s3cr3t" not in script.read_text() and secrets == ["s3cr3t-t0ken"]
    ask = lambda prompt: subprocess.run([str(script), prompt], env=env, capture_output=True, text=True).stdout  # noqa: E731
    assert ask("Username for 'https://git.example': ") == "bot\n"
    assert ask("Password for 'https://bot@git.example': ") == "s3cr3t-t0ken\n"
    assert gw._Git(tmp_path, env, secrets).scrub("fatal: s3cr3t-t0ken rejected") == "fatal: *** rejected"


# ---------------------------------------------------------------------------------------------------------
# Real repositories

def _git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "PATH": "/usr/bin:/bin:/usr/local/bin",
           "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def origin(tmp_path) -> Path:
    """A bare repository whose main branch holds MANIFEST at apps/bot.yaml (after two commits)."""
    bare = tmp_path / "deploy.git"
    _git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "seed"
    _git(tmp_path, "clone", "--quiet", str(bare), str(work))
    (work / "apps").mkdir()
    (work / "README.md").write_text("deploy repo\n")
    _git(work, "add", "README.md")
    _git(work, "commit", "--quiet", "-m", "init")
    (work / "apps" / "bot.yaml").write_text(MANIFEST)
    _git(work, "add", "apps/bot.yaml")
    _git(work, "commit", "--quiet", "-m", "promote bot-v2")
    _git(work, "push", "--quiet", "origin", "HEAD:main")
    return bare


def _request(url: str, **changes) -> WriteBack:
    return WriteBack(git=GitWriteBackSpec(repo_url=url, branch="main", path="apps/bot.yaml",
                                          author_name="tuneops-operator", author_email="ops@example.com"),
                     name="bot", namespace="ml", from_version="bot-v2", to_version="bot-v1",
                     message="rollback ml/bot: bot-v2 -> bot-v1\n\nerror rate 0.25 > maxErrorRate 0.05.\n", **changes)


def _show(bare: Path, rev: str = "main", path: str = "apps/bot.yaml") -> str:
    return _git(bare, "show", f"{rev}:{path}")


def test_rollback_commits_the_reverted_version(origin, tmp_path):
    result = push_revert(_request(f"file://{origin}"), workdir=tmp_path)
    assert result.state == "Committed" and result.pushes == 1
    assert _git(origin, "rev-parse", "main").strip() == result.commit
    assert _show(origin) == MANIFEST.replace('"bot-v2"', '"bot-v1"')
    log = _git(origin, "log", "-1", "--format=%an <%ae>%n%B", "main")
    assert log.startswith("tuneops-operator <ops@example.com>\nrollback ml/bot: bot-v2 -> bot-v1\n")
    assert "error rate 0.25 > maxErrorRate 0.05." in log
    assert _git(origin, "rev-list", "--count", "main").strip() == "3"
    assert not list(tmp_path.glob("tuneops-git-*"))  # the clone is cleaned up

    # Idempotent: Git already names bot-v1, nothing to commit.
    again = push_revert(_request(f"file://{origin}"), workdir=tmp_path)
    assert (again.state, again.commit) == ("UpToDate", result.commit)
    assert _git(origin, "rev-list", "--count", "main").strip() == "3"


def test_concurrent_push_is_rebased_and_retried(origin, tmp_path, monkeypatch):
    """Someone pushes (an edit of the same file) between our clone and our push: fetch, re-apply, push again."""
    other = tmp_path / "other"
    _git(tmp_path, "clone", "--quiet", str(origin), str(other))
    real_run = gw._Git.run
    pushed = []

    def run(self, *args, **kwargs):
        if args[0] == "push" and not pushed:
            text = (other / "apps" / "bot.yaml").read_text().replace("replicas: 2", "replicas: 3  # more traffic")
            (other / "apps" / "bot.yaml").write_text(text)
            _git(other, "commit", "--quiet", "-am", "scale bot to 3")
            _git(other, "push", "--quiet", "origin", "HEAD:main")
            pushed.append(True)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(gw._Git, "run", run)
    result = push_revert(_request(f"file://{origin}"), workdir=tmp_path)
    assert result.state == "Committed" and result.pushes == 2
    content = _show(origin)
    assert 'activeVersion: "bot-v1"' in content and "replicas: 3  # more traffic" in content
    subjects = _git(origin, "log", "--format=%s", "main").splitlines()
    assert subjects[:2] == ["rollback ml/bot: bot-v2 -> bot-v1", "scale bot to 3"]


def test_a_third_version_in_git_is_left_alone(origin, tmp_path):
    work = tmp_path / "w"
    _git(tmp_path, "clone", "--quiet", str(origin), str(work))
    (work / "apps" / "bot.yaml").write_text(MANIFEST.replace('"bot-v2"', '"bot-v3"').replace("  previewVersion: bot-v3\n", ""))
    _git(work, "commit", "--quiet", "-am", "promote bot-v3")
    _git(work, "push", "--quiet", "origin", "HEAD:main")
    result = push_revert(_request(f"file://{origin}"), workdir=tmp_path)
    assert result.state == "Skipped" and "names bot-v3" in result.message
    assert _git(origin, "log", "-1", "--format=%s", "main").strip() == "promote bot-v3"


def test_wrong_path_or_branch_fails_clearly(origin, tmp_path):
    bad_path = WriteBack(**{**_request(f"file://{origin}").__dict__,
                            "git": GitWriteBackSpec(repo_url=f"file://{origin}", path="apps/nope.yaml")})
    with pytest.raises(WriteBackError, match="apps/nope.yaml not found on branch main"):
        push_revert(bad_path, workdir=tmp_path)
    bad_branch = WriteBack(**{**_request(f"file://{origin}").__dict__,
                              "git": GitWriteBackSpec(repo_url=f"file://{origin}", branch="prod", path="apps/bot.yaml")})
    with pytest.raises(WriteBackError, match="git clone failed"):
        push_revert(bad_branch, workdir=tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_over_git_daemon_on_loopback(origin, tmp_path):
    port = _free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                               f"--base-path={origin.parent}", "--listen=127.0.0.1", f"--port={port}",
                               str(origin.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        result = push_revert(_request(f"git://127.0.0.1:{port}/{origin.name}"), workdir=tmp_path)
    finally:
        daemon.terminate()
        daemon.wait(10)
    assert result.state == "Committed"
    assert 'activeVersion: "bot-v1"' in _show(origin)


def test_https_failure_never_shows_the_token(tmp_path):
    """An unreachable https remote: the error names the failure, not the credentials."""
    request = _request("https://127.0.0.1:9/acme/deploy.git")
    with pytest.raises(WriteBackError) as info:
        push_revert(request, credentials={"username": "bot", "token": "s3cr3t-t0ken"}, workdir=tmp_path)
    assert "git clone failed" in str(info.value) and "s3cr3t" not in str(info.value)
    assert not list(tmp_path.glob("tuneops-git-*"))  # askpass script and clone removed
