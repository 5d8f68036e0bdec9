"""MLflow logging for a training run, through MlflowClient (no global "active run", so a resumed pod logs
into the same run by id): flattened spec params, metrics, dataset lineage, system metrics, artifacts."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tuneops.api.finetunejob import FineTuneJob

from .atomic import read_json, write_json_atomic
from .paths import mlflow_artifacts_dir, mlflow_default_uri

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow-run.json"
MLFLOW_PARAM_LIMIT = 6000  # mlflow rejects longer param values


def resolve_tracking_uri(job: FineTuneJob, home: Path | str | None = None) -> str:
    """spec.tracking.mlflowUri, else $MLFLOW_TRACKING_URI, else the embedded sqlite store in TUNEOPS_HOME."""
    uri = job.spec.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return f"file://{uri}" if uri.startswith("/") else uri
    return mlflow_default_uri(home)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """{"training": {"learningRate": 1e-4}} -> {"training.learningRate": "0.0001"}; lists are JSON."""
    flat: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    else:
        value = obj if isinstance(obj, str) else json.dumps(obj)
        flat[prefix.rstrip(".")] = value[:MLFLOW_PARAM_LIMIT]
    return flat


class Tracker:
    """One MLflow run per training run dir; restarting the pod resumes the same run id."""

    def __init__(self, uri: str, experiment: str, *, home: Path | str | None = None, system_metrics: bool = True):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment, home)
        self.run_id: str | None = None
        self.system_metrics = system_metrics
        self._monitor = None

    def _experiment(self, name: str, home: Path | str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        # Local stores keep artifacts under TUNEOPS_HOME/mlartifacts; a server decides its own location.
        location = None
        if self.uri.startswith("sqlite:"):
            location = mlflow_artifacts_dir(home).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def start(self, job: FineTuneJob, run_dir: Path) -> str:
        """Start a run, or resume the one recorded in run_dir (same id after a restart)."""
        from mlflow.entities import RunStatus

        marker = Path(run_dir) / RUN_ID_FILE
        if marker.is_file():
            recorded = read_json(marker)
            if recorded.get("trackingUri") == self.uri:
                self.run_id = recorded["runId"]
                self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                self.client.set_tag(self.run_id, "tuneops.resumed", "true")
                self._start_system_metrics(resume=True)
                return self.run_id
        tags = {"tuneops.job": job.metadata.name, "tuneops.namespace": job.metadata.namespace or "",
                "tuneops.family": job.spec.base_model.family, "tuneops.method": job.spec.method,
                "mlflow.runName": job.metadata.name}
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.run_id = run.info.run_id
        write_json_atomic(marker, {"runId": self.run_id, "trackingUri": self.uri, "experimentId": self.experiment_id})
        self.log_params(flatten(job.spec.to_wire() if hasattr(job.spec, "to_wire") else {}, ""))
        self._start_system_metrics(resume=False)
        return self.run_id

    def _start_system_metrics(self, *, resume: bool) -> None:
        if not self.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=5, resume_logging=resume,
                                                 tracking_uri=self.uri)
            self._monitor.start()
        except Exception as exc:  # noqa: BLE001 - system metrics are nice to have
            log.warning("system metrics disabled: %s", exc)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]
        for start in range(0, len(fresh), 100):  # mlflow's batch limit
            self.client.log_batch(self.run_id, params=fresh[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_dataset(self, version: str, manifest_path: Path | None, name: str, source: str,
                    sample_path: Path | None = None, context: str = "training") -> None:
        """Lineage: the prepared dataset as an MLflow dataset input (digest = its content hash) + manifest."""
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        rows: list[str] = []
        if sample_path and Path(sample_path).is_file():
            with open(sample_path, encoding="utf-8") as handle:  # a sample for the schema; the hash is the identity
                rows = [line.rstrip("\n") for _, line in zip(range(100), handle)]
        frame = pd.DataFrame({"row": rows})
        dataset = mlflow.data.from_pandas(frame, source=source, name=name,
                                          digest=version.removeprefix("sha256:")[:36])
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])
        self.client.set_tag(self.run_id, "tuneops.dataset.version", version)
        if manifest_path and Path(manifest_path).is_file():
            self.client.log_artifact(self.run_id, str(manifest_path), "dataset")

    def log_artifacts(self, local: Path, artifact_path: str | None = None) -> None:
        if Path(local).is_dir():
            self.client.log_artifacts(self.run_id, str(local), artifact_path)
        elif Path(local).is_file():
            self.client.log_artifact(self.run_id, str(local), artifact_path)

    def finish(self, succeeded: bool) -> None:
        from mlflow.entities import RunStatus

        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as exc:  # noqa: BLE001
                log.warning("system metrics monitor: %s", exc)
            self._monitor = None
        status = RunStatus.FINISHED if succeeded else RunStatus.FAILED
        self.client.set_terminated(self.run_id, status=RunStatus.to_string(status))


def plot_training_curve(log_history: list[dict[str, Any]], out: Path) -> Path | None:
    """loss and eval loss vs step as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
