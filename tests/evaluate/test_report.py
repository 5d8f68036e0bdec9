"""Report files (PNG charts, markdown), the terminal table, `tuneops report` / `tuneops versions`, and the
MLflow logging of an evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tuneops.api import parse_resource
from tuneops.api.evaluation import EvaluationSpec
from tuneops.cli import main
from tuneops.runtime.evaluate import judge, write_evaluation
from tuneops.runtime.registry import MODELVERSION_FILE, build_model_version, mlflow_client, to_yaml
from tuneops.runtime.report import format_table, load_history, log_to_mlflow, rows, write_report

REPO = Path(__file__).resolve().parents[2]
SPEC = EvaluationSpec.model_validate({
    "metrics": ["loss", "perplexity", "rougeL", "jsonValid"],
    "gate": {"loss": {"maxRatioVsBase": 1.0}, "rougeL": {"minDeltaVsBase": 0.05}},
})
BASE = {"loss": 2.5, "perplexity": math.exp(2.5), "rougeL": 0.30, "jsonValid": 0.25, "tokensPerSecond": 40.0}
GOOD = {"loss": 1.0, "perplexity": math.exp(1.0), "rougeL": 0.60, "jsonValid": 1.0, "tokensPerSecond": 38.0}
BAD = {"loss": 3.0, "perplexity": math.exp(3.0), "rougeL": 0.32, "jsonValid": 0.0, "tokensPerSecond": 39.0}


def make_run(tmp_path: Path, tuned: dict[str, float], name: str = "my-run") -> Path:
    run = tmp_path / "runs" / name
    result = judge(SPEC, BASE, tuned)
    write_evaluation(run / "eval", result, [], [], [])
    history = [{"step": s, "loss": 3.0 / s, "learning_rate": 1e-4 * (1 - s / 20), "epoch": s / 20}
               for s in range(1, 21)]
    history += [{"step": 10, "eval_loss": 1.2}, {"step": 20, "eval_loss": 1.0}]
    for step, cut in ((10, 12), (20, len(history))):
        ckpt = run / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history[:cut]}))
    (run / "result.json").write_text(json.dumps({"phase": "Succeeded", "metrics": {"train_loss": 1.1,
                                                                                   "train_runtime": 9.0}}))
    return run


def test_rows_and_table_show_direction_and_gate(tmp_path):
    result = judge(SPEC, BASE, BAD)
    assert result.verdict == "Failed"
    by_metric = {r.metric: r for r in rows(result)}
    assert [r.metric for r in rows(result)][:2] == ["loss", "rougeL"]  # gate metrics first
    assert by_metric["loss"].direction == "worse" and by_metric["loss"].gate == "FAIL"
    assert by_metric["jsonValid"].direction == "worse" and by_metric["jsonValid"].gate == ""
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "base", "tuned", "delta", "gate"]
    assert lines[2].split() == ["loss", "2.5000", "3.0000", "+0.5", "worse", "FAIL"]
    assert "verdict: Failed" in table and "FAIL loss 2.5 -> 3" in table


def test_write_report_makes_pngs_and_markdown(tmp_path):
    import matplotlib.image

    run = make_run(tmp_path, GOOD)
    history = load_history(run)
    assert len(history) == 22  # the newest checkpoint's history, not checkpoint-10's
    files = write_report(run)
    for png in (files.curves, files.comparison):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert width > 300 and height > 200
    text = files.markdown.read_text()
    assert "**Eval gate: Passed**" in text
    assert "| `rougeL` | 0.3000 | 0.6000 | +0.3 | better | pass |" in text
    assert "![curves](curves.png)" in text and "![comparison](comparison.png)" in text
    assert "| train_loss | 1.1000 |" in text and "train_runtime" not in text
    assert (run / "eval" / "history.json").is_file()


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path, GOOD)
    assert main(["report", "my-run", "--home", str(tmp_path), "--write"]) == 0
    out = capsys.readouterr().out
    assert "verdict: Passed" in out and "rougeL" in out and "phase=Succeeded" in out
    assert (run / "eval" / "report.md").is_file()
    make_run(tmp_path, BAD, name="bad-run")
    assert main(["report", str(tmp_path / "runs" / "bad-run")]) == 2
    assert "verdict: Failed" in capsys.readouterr().out
    assert main(["report", "missing", "--home", str(tmp_path)]) == 1
    assert "no evaluation" in capsys.readouterr().err


def test_versions_command(tmp_path, capsys):
    doc = yaml.safe_load((REPO / "examples" / "smollm2-lora.yaml").read_text())
    job = parse_resource(doc)
    home = tmp_path / "home"
    for version, tuned in ((1, GOOD), (2, BAD)):
        mv = build_model_version(job, version=version, evaluation=judge(SPEC, BASE, tuned),
                                 adapter={"uri": f"/models/{version}/adapter"}, merged=None,
                                 lineage={"job": job.metadata.name}, registry=None)
        target = home / "registry" / "support-triage" / str(version)
        target.mkdir(parents=True)
        (target / MODELVERSION_FILE).write_text(to_yaml(mv))
    assert main(["versions", "--home", str(home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "MODEL", "VERSION", "PHASE", "VERDICT"]
    assert lines[1].split()[:6] == ["support-triage-v1", "support-triage", "1", "Ready", "Passed", "loss=1"]
    assert lines[2].split()[:5] == ["support-triage-v2", "support-triage", "2", "Rejected", "Failed"]
    assert main(["versions", "--home", str(home), "show", "support-triage@latest"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["metadata"]["name"] == "support-triage-v1"
    assert main(["versions", "--home", str(home), "promote", "support-triage@2"]) == 1
    assert "rejected by the eval gate" in capsys.readouterr().err


def test_log_to_mlflow(mlflow_server, tmp_path):
    client = mlflow_client(mlflow_server)
    exp = client.get_experiment_by_name("report-test") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("report-test")
    run_id = client.create_run(exp_id).info.run_id
    run = make_run(tmp_path, GOOD)
    files = write_report(run)
    result = judge(SPEC, BASE, GOOD)
    log_to_mlflow(client, run_id, result, files)
    logged = client.get_run(run_id)
    assert logged.data.metrics["tuned.rougeL"] == pytest.approx(0.6)
    assert logged.data.metrics["base.loss"] == pytest.approx(2.5)
    assert logged.data.tags["tuneops.gate_verdict"] == "Passed"
    names = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/report.md", "eval/curves.png", "eval/comparison.png", "eval/evaluation.json",
            "eval/comparison_table.json"} <= names
