"""Config generation for DeepSpeed / FSDP / accelerate and the torchrun command lines, each checked by the
tool's own parser."""

from __future__ import annotations

import copy

import pytest

from tests.train.helpers import example_doc, parse_job
from tuneops.runtime import distributed


def job_with(distribution, **training):
    doc = copy.deepcopy(example_doc())
    doc["spec"]["distribution"] = distribution
    doc["spec"]["training"].update(training)
    return parse_job(doc)


class DataParallelWorld:
    """DeepSpeed's `mpu` interface: how many data-parallel ranks the config will run on."""

    def __init__(self, size):
        self.size = size

    def get_data_parallel_world_size(self):
        return self.size

    def get_global_rank(self):
        return 0

    def get_data_parallel_rank(self):
        return 0

    def get_model_parallel_world_size(self):
        return 1

    def get_model_parallel_rank(self):
        return 0


@pytest.mark.parametrize("settings,stage,offload_opt,offload_param", [
    ({"zeroStage": 2}, 2, False, False),
    ({"zeroStage": 2, "offloadOptimizer": True}, 2, True, False),
    ({"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True}, 3, True, True),
])
def test_deepspeed_configs_pass_deepspeeds_parser(settings, stage, offload_opt, offload_param):
    config_module = pytest.importorskip("deepspeed.runtime.config")
    # One rank: DeepSpeed's parser reads the world size from torch.distributed (1 when not initialised).
    job = job_with({"strategy": "deepspeed", "nodes": 1, "gpusPerNode": 1, "deepspeed": settings},
                   gradientAccumulationSteps=2, precision="bf16")
    config = distributed.deepspeed_config(job)
    parsed = config_module.DeepSpeedConfig(config, mpu=DataParallelWorld(distributed.world_size(job)))
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_batch_size == 4 * 2 and parsed.gradient_accumulation_steps == 2
    assert getattr(parsed, "bfloat16_config", None) is None or parsed.bfloat16_config.enabled
    assert (parsed.zero_config.offload_optimizer is not None) == offload_opt
    assert (parsed.zero_config.offload_param is not None) == offload_param


def test_deepspeeds_parser_rejects_an_inconsistent_batch():
    config_module = pytest.importorskip("deepspeed.runtime.config")
    job = job_with({"strategy": "deepspeed", "nodes": 1, "gpusPerNode": 1, "deepspeed": {"zeroStage": 2}})
    config = {**distributed.deepspeed_config(job), "train_batch_size": 7}
    with pytest.raises(AssertionError, match="train_batch_size"):
        config_module.DeepSpeedConfig(config)


def test_fsdp_settings_are_accepted_by_training_arguments(tmp_path):
    from transformers import TrainingArguments

    job = job_with({"strategy": "fsdp", "nodes": 1, "gpusPerNode": 2,
                    "fsdp": {"shardingStrategy": "full_shard", "cpuOffload": True}})
    args = distributed.fsdp_trainer_args(job)
    assert args["fsdp"] == "full_shard auto_wrap offload"
    parsed = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **args)
    assert parsed.fsdp_config["use_orig_params"] is True


def test_accelerate_config_loads_in_accelerate(tmp_path):
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    job = job_with({"strategy": "fsdp", "nodes": 2, "gpusPerNode": 4, "fsdp": {"shardingStrategy": "hybrid_shard"}})
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(distributed.accelerate_config(job)))
    loaded = ClusterConfig.from_yaml_file(path)
    assert loaded.num_processes == 8 and loaded.num_machines == 2
    assert loaded.fsdp_config["fsdp_sharding_strategy"] == "HYBRID_SHARD"


def test_multi_node_torchrun_line_takes_the_rank_from_the_indexed_job():
    from torch.distributed.run import get_args_parser

    job = job_with({"strategy": "ddp", "nodes": 3, "gpusPerNode": 4})
    env = distributed.launch_env(job, job_name="ftj-a", service="ftj-a-workers", namespace="ml")
    assert env["MASTER_ADDR"] == "ftj-a-0.ftj-a-workers.ml.svc"
    argv = distributed.launch_command(job, spec_path="/etc/tuneops/job.yaml", output="/output",
                                      env={**env, "JOB_COMPLETION_INDEX": "2"})
    parsed = get_args_parser().parse_args(argv[3:])
    assert (parsed.nnodes, parsed.nproc_per_node, parsed.node_rank) == ("3", "4", 2)
    assert parsed.master_addr == "ftj-a-0.ftj-a-workers.ml.svc" and parsed.master_port == 29500
    assert parsed.training_script == "tuneops.runtime.train" and parsed.module


def test_single_process_needs_no_launcher():
    job = job_with({"strategy": "none"})
    assert distributed.launch_command(job, spec_path="j.yaml", output="o") == [
        "python", "-m", "tuneops.runtime.train", "--spec", "j.yaml", "--output", "o"]
