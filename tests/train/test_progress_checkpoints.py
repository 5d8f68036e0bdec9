"""Progress contract, termination message, checkpoint markers/rotation/remote mirror (no model needed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.support.s3 import local_s3
from tuneops.runtime import checkpoints as ckpt
from tuneops.runtime.progress import (
    TERMINATION_LIMIT, ConfigMapPatcher, ProgressReporter, contract_metrics, termination_message, write_result,
)


def make_checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (path / "sub").mkdir()
    (path / "sub" / "state.json").write_text("{}")
    if complete:
        ckpt.mark_complete(path)
    return path


def test_resume_point_is_newest_complete_and_partials_are_removed(tmp_path):
    for step in (10, 20):
        make_checkpoint(tmp_path, step)
    make_checkpoint(tmp_path, 30, complete=False)  # killed mid-save
    assert ckpt.latest_complete_checkpoint(tmp_path).name == "checkpoint-20"
    assert [p.name for p in ckpt.remove_incomplete(tmp_path)] == ["checkpoint-30"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20"]


def test_keep_last_n(tmp_path):
    for step in (5, 10, 15, 20):
        make_checkpoint(tmp_path, step)
    ckpt.prune(tmp_path, keep=2)
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["checkpoint-15", "checkpoint-20"]


def test_remote_mirror_uploads_marker_last_and_restores(tmp_path):
    remote = ckpt.RemoteCheckpoints(f"file://{tmp_path / 'bucket'}", "job-a")
    local = tmp_path / "local"
    for step in (10, 20, 30):
        remote.push(make_checkpoint(local, step), keep=2)
    remote_dirs = sorted(p.name for p in (tmp_path / "bucket" / "job-a").iterdir())
    assert remote_dirs == ["checkpoint-20", "checkpoint-30"]
    # A partial upload (no marker) is never restored.
    partial = tmp_path / "bucket" / "job-a" / "checkpoint-40"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"x")
    fresh = tmp_path / "new-pod"
    restored = remote.pull_latest(fresh)
    assert restored == fresh / "checkpoint-30"
    assert (restored / "sub" / "state.json").read_text() == "{}" and (restored / ckpt.COMPLETE).is_file()


def test_remote_mirror_on_s3(tmp_path, monkeypatch):
    with local_s3(monkeypatch, "ckpt"):
        remote = ckpt.RemoteCheckpoints("s3://ckpt/runs", "job-b")
        remote.push(make_checkpoint(tmp_path / "local", 7), keep=3)
        restored = remote.pull_latest(tmp_path / "restored")
    assert restored.name == "checkpoint-7" and (restored / "adapter_model.safetensors").read_bytes() == b"w" * 10


def test_progress_json_follows_the_contract(tmp_path):
    reporter = ProgressReporter(tmp_path, patcher=None)
    reporter.update(phase="Running", step=3, totalSteps=10, epoch=0.3,
                    metrics=contract_metrics({"loss": 1.5, "learning_rate": 1e-4, "eval_loss": 1.6, "junk": "x"}))
    state = json.loads((tmp_path / "progress.json").read_text())
    assert state["phase"] == "Running" and state["step"] == 3 and state["totalSteps"] == 10
    assert state["metrics"] == {"loss": 1.5, "learningRate": 1e-4, "evalLoss": 1.6}
    assert state["updated"].endswith("Z")


class _Recorder(BaseHTTPRequestHandler):
    requests: list = []

    def do_PATCH(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((self.path, self.headers["Content-Type"], self.headers["Authorization"], body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_configmap_patch_is_a_merge_patch_with_the_pod_token(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = tmp_path / "token"
        token.write_text("sa-token\n")
        patcher = ConfigMapPatcher("ftj-progress", "ml", api=f"http://127.0.0.1:{server.server_port}",
                                   token_file=token, ca_file=tmp_path / "absent")
        ProgressReporter(tmp_path, patcher=patcher).update(phase="Running", step=1, force=True)
    finally:
        server.shutdown()
    path, ctype, auth, body = _Recorder.requests[-1]
    assert path == "/api/v1/namespaces/ml/configmaps/ftj-progress"
    assert ctype == "application/merge-patch+json" and auth == "Bearer sa-token"
    assert json.loads(json.loads(body)["data"]["progress"])["step"] == 1


def test_unreachable_api_server_does_not_fail_training(tmp_path):
    patcher = ConfigMapPatcher("x", "ml", api="http://127.0.0.1:9", token_file=tmp_path / "t", timeout=0.5)
    (tmp_path / "t").write_text("t")
    ProgressReporter(tmp_path, patcher=patcher).update(step=1, force=True)
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 1


def test_termination_message_stays_parseable_under_4kib(tmp_path):
    result = {"phase": "Succeeded", "reason": "TrainingComplete", "message": "m" * 3000,
              "metrics": {f"m{i}": float(i) for i in range(200)},
              "evaluation": {"verdict": "Passed", "checks": ["x" * 100] * 50, "score": 0.9}}
    text = termination_message(result)
    assert len(text.encode()) < TERMINATION_LIMIT
    parsed = json.loads(text)
    assert parsed["phase"] == "Succeeded" and parsed["evaluation"] == {"verdict": "Passed", "score": 0.9}
    log = tmp_path / "termination-log"
    log.write_text("")
    write_result(tmp_path, result, termination_log=log)
    assert json.loads(log.read_text())["phase"] == "Succeeded"
    assert json.loads((tmp_path / "result.json").read_text())["message"] == "m" * 3000
