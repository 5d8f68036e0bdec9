"""The write-back reads its Git credentials from the Secret named by spec.gitWriteBack.secretRef (real apiserver),
and a missing Secret is a Failed write-back that names it (retried), never an exception in the reconcile."""

from __future__ import annotations

import json

import pytest

from tuneops.api.modeldeployment import GitWriteBackSpec
from tuneops.operator.gitops_writeback import WriteBack
from tuneops.operator.kube import Kube
from tuneops.operator.reconcile import Reconciler
from tuneops.operator.settings import OperatorSettings

pytestmark = pytest.mark.kube


def _request(ns: str, secret: str) -> WriteBack:
    git = GitWriteBackSpec(repo_url="https://127.0.0.1:9/acme/deploy.git", path="apps/bot.yaml",
                           secret_ref={"name": secret})
    return WriteBack(git=git, name="bot", namespace=ns, from_version="bot-v2", to_version="bot-v1", message="m\n")


def test_credentials_come_from_the_named_secret(kube):
    ns = kube.create_namespace("wbsecret")
    kube.apply(json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "deploy-git"},
                           "stringData": {"username": "bot", "token": "s3cr3t-t0ken"}}), namespace=ns)
    reconciler = Reconciler(Kube(), OperatorSettings())
    assert reconciler._git_credentials(_request(ns, "deploy-git")) == {"username": "bot", "token": "s3cr3t-t0ken"}
    state, commit, message = reconciler._write_back(_request(ns, "deploy-git"))
    assert (state, commit) == ("Failed", None) and "git clone failed" in message and "s3cr3t" not in message
    state, _, message = reconciler._write_back(_request(ns, "missing"))
    assert state == "Failed" and "secrets \"missing\" not found" in message
