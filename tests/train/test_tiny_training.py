"""Training mechanics on a tiny random model: padding-free correctness, MLflow against a real server,
resume after kill -9, and real 2-process (gloo) data-parallel training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.helpers import REPO, parse_job, tiny_job, write_job
from tuneops.runtime.training_data import prepare_training_data
from tuneops.runtime.train import train


def test_padding_free_batches_give_the_same_loss_as_padded(tiny_llama_dir):
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()
    examples = [{"input_ids": [1, 5, 6, 7, 8, 9, 10], "completion_mask": [0, 0, 0, 1, 1, 1, 1]},
                {"input_ids": [1, 11, 12, 13], "completion_mask": [0, 0, 1, 1]}]
    for e in examples:
        e["labels"] = [t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)([{k: v for k, v in e.items() if k != "completion_mask"} for e in examples])
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{k: v for k, v in e.items() if k != "completion_mask"} for e in examples])
    assert flat["input_ids"].shape == (1, 11) and "attention_mask" not in flat
    with torch.no_grad():
        # use_cache=False, as in training: transformers only derives the per-sample (block-diagonal) mask
        # from restarting position ids when no KV cache is in play. train.build_model sets it.
        loss_padded = model(**padded, use_cache=False).loss
        loss_flat = model(**flat, use_cache=False).loss
    assert torch.allclose(loss_padded, loss_flat, atol=1e-5), (loss_padded, loss_flat)


def test_mlflow_logging_against_a_real_server(tiny_llama_dir, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from tuneops.runtime.tracking import Tracker

    doc = tiny_job(tiny_llama_dir, maxSteps=8, logEverySteps=2, evalEverySteps=4)
    doc["spec"]["tracking"] = {"mlflowUri": mlflow_server, "experiment": "tiny"}
    job = parse_job(doc)
    data = prepare_training_data(job.spec.dataset, out_dir=tmp_path / "data")
    tracker = Tracker(mlflow_server, "tiny", system_metrics=False)
    result = train(job, run_dir=tmp_path / "run", data=data, tracking=tracker, disable_tqdm=True)

    client = MlflowClient(mlflow_server)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.learningRate"] == "0.003" and run.data.params["method"] == "lora"
    assert run.data.tags["tuneops.dataset.version"] == data.version
    assert [h.step for h in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 4, 6, 8]
    assert client.get_metric_history(run.info.run_id, "eval_loss")
    assert client.get_metric_history(run.info.run_id, "tokens_per_second")[-1].value > 0
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {"plots/training-curve.png"}

    # A restarted pod continues the same MLflow run.
    doc["spec"]["training"]["maxSteps"] = 10
    again = train(parse_job(doc), run_dir=tmp_path / "run", data=data,
                  tracking=Tracker(mlflow_server, "tiny", system_metrics=False), disable_tqdm=True)
    assert again.mlflow_run_id == result.mlflow_run_id
    assert client.get_metric_history(run.info.run_id, "loss")[-1].step == 10


def _train_process(spec: Path, out: Path, *extra: str, launcher: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = (launcher or [sys.executable]) + ["-m", "tuneops.runtime.train", "--spec", str(spec),
                                             "--output", str(out), "--no-tracking", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)


def _finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output.decode()[-4000:]
    return output.decode()


def _train_losses(out: Path) -> list[float]:
    from tuneops.runtime.checkpoints import latest_complete_checkpoint

    state = json.loads((latest_complete_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    return [e["loss"] for e in state["log_history"] if "loss" in e]


@pytest.mark.slow
def test_resume_after_kill_minus_9(tiny_llama_dir, tmp_path):
    planned = 120
    doc = tiny_job(tiny_llama_dir, maxSteps=planned, saveEverySteps=10, saveTotalLimit=2, logEverySteps=10)
    spec = write_job(doc, tmp_path / "job.yaml")
    out = tmp_path / "killed"
    process = _train_process(spec, out)
    deadline = time.monotonic() + 600
    while not list((out / "checkpoints").glob("checkpoint-*/COMPLETE")):
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # preemption: no cleanup, no final save
    process.wait()
    assert not (out / "result.json").exists()

    _finish(_train_process(spec, out))
    result = json.loads((out / "result.json").read_text())
    resumed_step = int(result["resumedFrom"].rsplit("-", 1)[1])
    assert result["phase"] == "Succeeded" and 10 <= resumed_step < planned
    assert result["steps"] == result["totalSteps"] == planned
    assert result["stepsThisAttempt"] == planned - resumed_step  # no step done twice or skipped
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) <= 2  # keep-last-N

    # The same run without the interruption ends at a comparable loss.
    straight = tmp_path / "straight"
    _finish(_train_process(spec, straight))
    resumed_loss, straight_loss = _train_losses(out)[-1], _train_losses(straight)[-1]
    assert abs(resumed_loss - straight_loss) <= 0.1 * straight_loss, (resumed_loss, straight_loss)


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(tiny_llama_dir, tmp_path):
    steps = 30
    single = tiny_job(tiny_llama_dir, maxSteps=steps, batchSize=4, logEverySteps=5)
    ddp = tiny_job(tiny_llama_dir, maxSteps=steps, batchSize=2, logEverySteps=5)  # 2 x 2 = the same global batch
    ddp["spec"]["distribution"] = {"strategy": "ddp", "nodes": 1, "gpusPerNode": 2}
    one = _train_process(write_job(single, tmp_path / "one.yaml"), tmp_path / "one")
    _finish(one)
    from tuneops.runtime.distributed import launch_command

    argv = launch_command(parse_job(ddp), spec_path=str(write_job(ddp, tmp_path / "ddp.yaml")),
                          output=str(tmp_path / "ddp"), extra=["--no-tracking"], python=sys.executable)
    assert argv[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert log.returncode == 0, (log.stdout + log.stderr)[-4000:]
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["phase"] == "Succeeded" and result["steps"] == steps
    m1 = json.loads((tmp_path / "one" / "result.json").read_text())["metrics"]
    m2 = result["metrics"]
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    for m in (m1, m2):
        # Both learn: the held-out loss falls (robust), and so does the noisier last-batch training loss.
        assert m["eval_loss"] < 0.9 * m["initial_eval_loss"], m
        assert m["final_train_loss"] < 0.9 * m["first_train_loss"], m
    assert abs(m1["final_train_loss"] - m2["final_train_loss"]) <= 0.15 * m1["final_train_loss"], (m1, m2)
    assert abs(m1["eval_loss"] - m2["eval_loss"]) <= 0.15 * m1["eval_loss"], (m1, m2)
