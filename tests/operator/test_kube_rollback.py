"""Automatic rollback with Git write-back on the real control plane.

The operator runs as a real `tuneops operator` subprocess (its own namespace) pointed at a Prometheus HTTP API on
loopback (`TUNEOPS_PROMETHEUS_URL`); this stand-in answers the operator's PromQL queries from a table per
version, since no Prometheus can scrape kwok's pods. Git is real: a bare repository served over file://.
Story: Git promotes bot-v2 -> the operator switches to it -> its live error rate breaks postPromotion ->
the active Service goes back to the warm bot-v1 slot -> the operator commits the reverted activeVersion ->
"Argo CD" syncs that commit -> Healthy on bot-v1, and bot-v2 was never re-promoted in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.operator.conftest import REPO, get_json, wait
from tests.operator.fake_prometheus import FakePrometheus

pytestmark = pytest.mark.kube

MANIFEST = """\
# The support bot's serving, synced by Argo CD. Promote by editing activeVersion.
apiVersion: tuneops.io/v1alpha1
kind: ModelDeployment
metadata:
  name: bot
spec:
  model: bot
  activeVersion: bot-v1   # the current champion
  engine: {kind: tgi, port: 8080}
  replicas: 2
  promotion:
    scaleDownDelaySeconds: 600
    postPromotion:
      windowSeconds: 120
      intervalSeconds: 1
      maxErrorRate: 0.05
  gitWriteBack:
    repoUrl: REPO_URL
    branch: main
    path: apps/bot.yaml
    authorName: tuneops-operator
    authorEmail: tuneops@example.com
"""


def _git(cwd, *args) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "PATH": os.environ["PATH"],
           "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def _mv(name: str, version: int) -> str:
    return json.dumps({"apiVersion": "tuneops.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
                       "spec": {"model": "bot", "version": version,
                                "baseModel": {"family": "llama3", "source": {"hf": "org/base"}},
                                "adapter": {"uri": f"s3://models/bot/{version}/adapter"},
                                "evaluation": {"verdict": "Passed"}}})


def _status(kube, ns):
    return (get_json(kube, "mdep", "bot", namespace=ns) or {}).get("status") or {}


def _active_selector(kube, ns) -> str:
    return get_json(kube, "svc", "bot", namespace=ns)["spec"]["selector"]["tuneops.io/slot"]


def _sync(kube, ns, text: str):
    """What Argo CD does with the file: apply it."""
    kube.apply(json.dumps(yaml.safe_load(text)), namespace=ns)


def test_failed_post_promotion_checks_roll_back_and_write_back_to_git(crds, tmp_path):
    kube = crds
    ns = kube.create_namespace("rollback")  # not op-*: the in-process operator must not watch it
    bare = tmp_path / "deploy.git"
    _git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "work"
    _git(tmp_path, "clone", "--quiet", str(bare), str(work))
    (work / "apps").mkdir()
    manifest = MANIFEST.replace("REPO_URL", f"file://{bare}")
    (work / "apps" / "bot.yaml").write_text(manifest)
    _git(work, "add", ".")
    _git(work, "commit", "--quiet", "-m", "serve bot-v1")
    _git(work, "push", "--quiet", "origin", "HEAD:main")

    prom = FakePrometheus()
    threading.Thread(target=prom.serve_forever, daemon=True).start()
    prom.values = {"bot-v1": {"error_rate": 0.0, "p95_latency_ms": 300}, "bot-v2": {"error_rate": 0.3}}
    env = {**os.environ, "TUNEOPS_PROMETHEUS_URL": prom.url, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "operator.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tuneops.cli", "operator", "--standalone", "-n", ns,
                             "--metrics-port", "0", "--liveness", "", "--log-format", "plain"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for name, version in (("bot-v1", 1), ("bot-v2", 2)):
            kube.apply(_mv(name, version), namespace=ns)
        _sync(kube, ns, manifest)
        wait("bot-v1 Healthy", lambda: _status(kube, ns).get("phase") == "Healthy", timeout=120)
        assert _active_selector(kube, ns) == "blue"

        # A reviewed PR promotes bot-v2; Argo CD syncs it.
        (work / "apps" / "bot.yaml").write_text(manifest.replace("activeVersion: bot-v1", "activeVersion: bot-v2"))
        _git(work, "commit", "--quiet", "-am", "promote bot-v2")
        _git(work, "push", "--quiet", "origin", "HEAD:main")
        promoted_commit = _git(bare, "rev-parse", "main").strip()
        synced = time.monotonic()
        _sync(kube, ns, _git(bare, "show", "main:apps/bot.yaml"))
        wait("traffic back on blue", lambda: _status(kube, ns).get("rollback") and _active_selector(kube, ns) == "blue",
             timeout=120, interval=0.1)
        back = time.monotonic() - synced

        st = wait("rolled back and written back", lambda: (s := _status(kube, ns)).get("rollback", {})
                  .get("writeBack") == "Committed" and s, timeout=120)
        assert _active_selector(kube, ns) == "blue"
        assert (st["phase"], st["activeVersion"], st["activeSlot"]) == ("RolledBack", "bot-v1", "blue")
        rb = st["rollback"]
        assert (rb["from"], rb["to"], rb["holding"]) == ("bot-v2", "bot-v1", True)
        assert rb["reason"] == "error rate 0.3 > maxErrorRate 0.05"
        print(f"\nrollback timings: Git sync -> traffic back on bot-v1 {back:.1f}s, -> write-back committed "
              f"{time.monotonic() - synced:.1f}s (switch to bot-v2 at {st['postPromotion']['since']}, "
              f"rollback decided at {rb['time']}, intervalSeconds 1)")
        assert st["postPromotion"]["version"] == "bot-v2" and st["postPromotion"]["state"] == "Failed"
        assert get_json(kube, "mdep", "bot", namespace=ns)["spec"]["activeVersion"] == "bot-v2"  # Git not synced yet

        # Git: one new commit on main, parent = the promotion, only activeVersion changed, message says why.
        head = _git(bare, "rev-parse", "main").strip()
        assert rb["commit"] == head and f"reverted in Git by commit {head[:12]}" in st["message"]
        assert _git(bare, "rev-parse", "main~1").strip() == promoted_commit
        assert _git(bare, "show", "main:apps/bot.yaml") == manifest  # bot-v1 again, comments and all
        message = _git(bare, "log", "-1", "--format=%an|%B", "main")
        assert message.startswith(f"tuneops-operator|rollback {ns}/bot: bot-v2 -> bot-v1\n")
        assert "error rate 0.3 > maxErrorRate 0.05" in message and "error rate: 0.3" in message
        events = {e["reason"] for e in get_json(kube, "events", "--field-selector", "involvedObject.name=bot",
                                                  namespace=ns)["items"]}
        assert {"Promoted", "PostPromotionCheckFailed", "RolledBack", "GitWriteBack"} <= events
        assert any('version="bot-v2"' in q for q in prom.queries)

        # spec still names bot-v2 and its metrics now look fine: the operator must not re-promote it.
        prom.values["bot-v2"] = {"error_rate": 0.0}
        kube.kubectl("patch", "mdep", "bot", "-n", ns, "--type=merge",  # a spec edit: a reconcile
                     "-p", json.dumps({"spec": {"promotion": {"scaleDownDelaySeconds": 601}}}))
        wait("edit observed", lambda: _status(kube, ns).get("observedGeneration")
             == get_json(kube, "mdep", "bot", namespace=ns)["metadata"]["generation"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert _active_selector(kube, ns) == "blue"
            time.sleep(0.25)
        assert _status(kube, ns)["activeVersion"] == "bot-v1"

        # Argo CD syncs the write-back commit: Git and the cluster agree, back to Healthy.
        _sync(kube, ns, _git(bare, "show", "main:apps/bot.yaml"))
        st = wait("Healthy on bot-v1", lambda: (s := _status(kube, ns)).get("phase") == "Healthy" and s)
        assert st["rollback"]["holding"] is False and st["activeVersion"] == "bot-v1"
        assert _git(bare, "rev-list", "--count", "main").strip() == "3"  # no further commits
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        prom.shutdown()
