"""Alert rules pass `promtool check rules` and fire (promtool unit tests) when they should; the Grafana
dashboard parses and every metric its PromQL (and the alerts') uses is one the code really exports."""
from __future__ import annotations

import json
import re
import subprocess
import textwrap
import warnings

import pytest
import yaml

from tests.deploy import exported_metrics
from tests.deploy.tools import CHART, REPO, render, which

REPO_EXAMPLES = REPO / "examples"

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan", "le", "time"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                      # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                                 # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                # range / subquery
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word, rest = m.group(), expr[m.end():].lstrip()
        if rest.startswith("(") or word in PROMQL_WORDS or expr[max(0, m.start() - 1)].isdigit():
            continue
        names.add(word)
    return names


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.95, sum by (ns, le) (rate(a_bucket{x="y(z)"}[5m]))) > 2') == {"a_bucket"}
    assert metric_names("max by (namespace, name) (m1) and on (name) (time() - m2) > 1e3") == {"m1", "m2"}


@pytest.fixture(scope="module")
def rules_objs():
    objs = render("monitoring.prometheusRule.enabled=true")
    return [o for o in objs if o["kind"] == "PrometheusRule"]


@pytest.fixture(scope="module")
def rule_file(rules_objs, tmp_path_factory):
    """The rendered PrometheusRule's spec, as a plain Prometheus rules file."""
    path = tmp_path_factory.mktemp("rules") / "tuneops-rules.yaml"
    path.write_text(yaml.safe_dump(rules_objs[0]["spec"]))
    return path


def test_rules_shape(rules_objs):
    """A schema check that runs even without promtool."""
    (obj,) = rules_objs
    alerts = [r for g in obj["spec"]["groups"] for r in g["rules"]]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    assert {"TuneopsTrainingJobFailed", "TuneopsTrainingJobStuck", "TuneopsServingErrorRateHigh",
            "TuneopsServingLatencySLO", "TuneopsDriftDetected", "TuneopsPromotionAborted",
            "TuneopsRolledBack"} <= set(names)
    for a in alerts:
        assert set(a) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, a
        assert a["expr"].strip() and a["labels"]["severity"] in ("info", "warning", "critical")
        assert a["annotations"]["summary"]
        assert "{{ $labels." in a["annotations"]["summary"] or a["alert"] == "TuneopsOperatorReconcileErrors" \
            or "{{ $value" in a["annotations"]["summary"]


def _promtool():
    tool = which("promtool")
    if not tool:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return tool


def test_promtool_check_rules(rule_file):
    r = subprocess.run([_promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 10% of requests fail on bot, 1% on calm.
      - series: 'tgi_request_count{{namespace="ml",modeldeployment="bot"}}'
        values: '0+100x30'
      - series: 'tgi_request_failure{{namespace="ml",modeldeployment="bot"}}'
        values: '0+10x30'
      - series: 'tgi_request_count{{namespace="ml",modeldeployment="calm"}}'
        values: '0+100x30'
      - series: 'tgi_request_failure{{namespace="ml",modeldeployment="calm"}}'
        values: '0+1x30'
      - series: 'tuneops_finetunejob_phase{{namespace="ml",name="sft-7",phase="Failed"}}'
        values: '0 0 1x28'
      - series: 'tuneops_modeldeployment_phase{{namespace="ml",name="bot",phase="Aborted"}}'
        values: '1x30'
      - series: 'tuneops_modeldeployment_phase{{namespace="ml",name="bot",phase="RolledBack"}}'
        values: '0 0 1x28'
      - series: 'tuneops_modeldeployment_phase{{namespace="ml",name="calm",phase="RolledBack"}}'
        values: '0x30'
      # Both Running; hung's step counter stopped at 5, busy's keeps moving.
      - series: 'tuneops_finetunejob_phase{{namespace="ml",name="hung",phase="Running"}}'
        values: '1x120'
      - series: 'tuneops_finetunejob_progress_step{{namespace="ml",name="hung"}}'
        values: '0 1 2 3 4 5x115'
      - series: 'tuneops_finetunejob_phase{{namespace="ml",name="busy",phase="Running"}}'
        values: '1x120'
      - series: 'tuneops_finetunejob_progress_step{{namespace="ml",name="busy"}}'
        values: '0+1x120'
      # Embedding drift: bot's prompts moved to another topic, calm's are like the training prompts.
      - series: 'tuneops_drift_embedding_outlier_fraction{{namespace="ml",modeldeployment="bot"}}'
        values: '0.6x30'
      - series: 'tuneops_drift_embedding_centroid_distance{{namespace="ml",modeldeployment="bot"}}'
        values: '0.3x30'
      - series: 'tuneops_drift_embedding_outlier_fraction{{namespace="ml",modeldeployment="calm"}}'
        values: '0.05x30'
      - series: 'tuneops_drift_embedding_centroid_distance{{namespace="ml",modeldeployment="calm"}}'
        values: '0.01x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: TuneopsServingErrorRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, modeldeployment: bot}}
            exp_annotations:
              summary: ModelDeployment ml/bot error rate 10%
      - eval_time: 20m
        alertname: TuneopsTrainingJobFailed
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, name: sft-7}}
            exp_annotations:
              summary: FineTuneJob ml/sft-7 failed
              description: kubectl describe ftj -n ml sft-7 shows the reason (termination message of the training pod).
      - eval_time: 5m
        alertname: TuneopsPromotionAborted
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, name: bot}}
            exp_annotations:
              summary: Promotion of ModelDeployment ml/bot aborted
              description: Traffic stayed on the previous version; status.message has the failed gate.
      - eval_time: 1m
        alertname: TuneopsRolledBack
        exp_alerts: []
      - eval_time: 5m
        alertname: TuneopsRolledBack
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, name: bot}}
            exp_annotations:
              summary: ModelDeployment ml/bot rolled back after promotion
              description: status.rollback names the failed check, the measured values and the Git write-back commit; see docs/rollback-writeback.md.
      - eval_time: 10m
        alertname: TuneopsEmbeddingDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: TuneopsEmbeddingDrift
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, modeldeployment: bot}}
            exp_annotations:
              summary: Prompt topics drifted on ml/bot (embedding statistic 0.60)
              description: GET /drift on a serving pod shows the embedding statistics and their reasons; see docs/monitoring-drift.md.
      - eval_time: 30m
        alertname: TuneopsTrainingJobStuck
        exp_alerts: []
      - eval_time: 45m
        alertname: TuneopsTrainingJobStuck
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: ml, name: hung}}
            exp_annotations:
              summary: FineTuneJob ml/hung made no progress
              description: No training step for more than 30 minutes while Running.
"""


def test_alerts_fire_when_they_should(rule_file, tmp_path):
    """promtool unit tests: the error-rate alert fires for 10% errors and not for 1%; failed, aborted and
    stuck jobs alert; a job is not 'stuck' before jobStuckMinutes, nor while its step counter moves; embedding
    drift alerts after 15 min for the drifted deployment only."""
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(textwrap.dedent(ALERT_TESTS).format(rules=json.dumps(str(rule_file))))
    r = subprocess.run([_promtool(), "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _dashboard() -> dict:
    return json.loads((CHART / "files" / "dashboard.json").read_text())


def test_dashboard_is_valid_grafana_json():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    # Serving latency/throughput/errors, training loss/progress, operator reconcile health.
    assert {"Requests / s", "Error ratio", "Latency p50 / p95", "Training loss", "Progress",
            "Reconcile errors / s"} <= titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24


def _all_exprs(rules_objs) -> list[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in _dashboard()["templating"]["list"] if isinstance(v.get("query"), dict)]
    exprs += [r["expr"] for g in rules_objs[0]["spec"]["groups"] for r in g["rules"]]
    return exprs


def test_promql_uses_only_exported_metrics(rules_objs):
    names, source = exported_metrics.available()
    if not source.startswith("code"):
        warnings.warn(f"tuneops metric names checked against {source}", stacklevel=1)
    used = set()
    for expr in _all_exprs(rules_objs):
        # label_values(metric, label) -> the metric
        expr = re.sub(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)", r"\1", expr)
        used |= metric_names(expr)
    unknown = sorted(used - names)
    assert not unknown, f"PromQL uses metrics nobody exports ({source}): {unknown}"
    assert any(n.startswith("tgi_") for n in used) and any(n.startswith("tuneops_") for n in used)


def test_kube_state_metrics_config_follows_the_api():
    """The phase lists kube-state-metrics reports are the API's phases (one source of truth)."""
    from tuneops.api.finetunejob import JOB_PHASES
    from tuneops.api.modeldeployment import DeploymentPhase

    cfg = yaml.safe_load((CHART / "files" / "kube-state-metrics.yaml").read_text())
    assert cfg["kind"] == "CustomResourceStateMetrics"
    by_kind = {r["groupVersionKind"]["kind"]: r for r in cfg["spec"]["resources"]}
    crd_versions = {}
    for path in (CHART / "crds").glob("tuneops.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        crd_versions[crd["spec"]["names"]["kind"]] = [v["name"] for v in crd["spec"]["versions"]]
    for kind, phases in (("FineTuneJob", JOB_PHASES), ("ModelDeployment", DeploymentPhase.__args__)):
        res = by_kind[kind]
        assert res["groupVersionKind"]["version"] in crd_versions[kind]
        (phase,) = [m for m in res["metrics"] if m["name"] == "phase"]
        assert phase["each"]["stateSet"]["list"] == list(phases)
    objs = render("monitoring.kubeStateMetrics.enabled=true")
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("kube-state-metrics"))
    assert yaml.safe_load(cm["data"]["custom-resource-state.yaml"]) == cfg
    binding = next(o for o in objs if o["kind"] == "ClusterRoleBinding" and "kube-state" in o["metadata"]["name"])
    assert binding["subjects"][0]["namespace"] == "monitoring"


@pytest.mark.parametrize("engine", ["tgi", "builtin"])
def test_podmonitor_scrapes_the_serving_pods_the_operator_builds(engine):
    """The PodMonitor's selector, port and relabelings match the serving Deployment the operator's own
    builder makes, so the dashboard's `modeldeployment` label exists."""
    import re as _re

    from tuneops.api import parse_resource
    from tuneops.operator.md_children import VersionArtifacts, slot_deployment
    from tuneops.operator.settings import OperatorSettings

    doc = yaml.safe_load((REPO_EXAMPLES / "modeldeployment.yaml").read_text())
    doc["spec"]["engine"] = {"kind": engine}
    md = parse_resource(doc)
    doc["metadata"]["uid"] = "u-1"
    dep = slot_deployment(doc, md.spec, "green", VersionArtifacts(name="support-bot-v7", base_model="m",
                                                               adapter_uri="s3://b/a"), 2, OperatorSettings())
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}

    pm = next(o for o in render("monitoring.serviceMonitor.enabled=true") if o["kind"] == "PodMonitor")
    for expr in pm["spec"]["selector"]["matchExpressions"]:
        assert expr["operator"] == "Exists" and expr["key"] in labels, expr
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    relabeled = {}
    for r in endpoint["relabelings"]:
        (src,) = r["sourceLabels"]
        label = next(k for k in labels if "__meta_kubernetes_pod_label_" + _re.sub(r"[^a-zA-Z0-9_]", "_", k) == src)
        relabeled[r["targetLabel"]] = labels[label]
    assert relabeled == {"modeldeployment": "support-bot", "slot": "green", "version": "support-bot-v7"}
