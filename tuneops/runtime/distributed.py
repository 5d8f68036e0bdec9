"""From spec.distribution to what actually runs: DeepSpeed / FSDP settings for the HF Trainer, an accelerate
config file, and the torchrun command line for one or several nodes (an Indexed Job: one pod per node,
NODE_RANK = JOB_COMPLETION_INDEX, MASTER_ADDR = pod 0 behind the Job's headless Service).

Pure functions of the spec (no torch import), so the operator-facing builders and tests can use them cheaply.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from tuneops.api.finetunejob import FineTuneJob

MASTER_PORT = 29500
TRAIN_MODULE = "tuneops.runtime.train"


def world_size(job: FineTuneJob) -> int:
    d = job.spec.distribution
    return d.nodes * max(d.gpus_per_node, 1)


def processes_per_node(job: FineTuneJob) -> int:
    return max(job.spec.distribution.gpus_per_node, 1)  # gpusPerNode 0 = one CPU process per node


def _mixed_precision(job: FineTuneJob) -> str:
    precision = job.spec.training.precision
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}.get(precision, "bf16")  # auto: GPUs -> bf16


def deepspeed_config(job: FineTuneJob) -> dict[str, Any]:
    """A complete DeepSpeed config (no "auto" values, so DeepSpeed's own parser can validate it as is)."""
    spec, t = job.spec, job.spec.training
    ds = spec.distribution.deepspeed
    if spec.distribution.strategy != "deepspeed" or ds is None:
        ds_stage, offload_opt, offload_params = 2, False, False
    else:
        ds_stage, offload_opt, offload_params = ds.zero_stage, ds.offload_optimizer, ds.offload_params
    zero: dict[str, Any] = {
        "stage": ds_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 50_000_000,
    }
    if ds_stage >= 2:
        zero["allgather_bucket_size"] = 50_000_000
    if offload_opt:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if ds_stage == 3:
        # Gather the full weights on save so adapters/merged models are normal safetensors files.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    mixed = _mixed_precision(job)
    return {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.batch_size * t.gradient_accumulation_steps * world_size(job),
        "gradient_clipping": t.max_grad_norm,
        "bf16": {"enabled": mixed == "bf16"},
        "fp16": {"enabled": mixed == "fp16"},
        "zero_optimization": zero,
        "steps_per_print": t.log_every_steps,
        "wall_clock_breakdown": False,
    }


def fsdp_trainer_args(job: FineTuneJob, layer_class: str | None = None) -> dict[str, Any]:
    """TrainingArguments fsdp / fsdp_config for spec.distribution.fsdp."""
    fsdp = job.spec.distribution.fsdp
    strategy = fsdp.sharding_strategy if fsdp else "full_shard"
    options = [strategy, "auto_wrap"]
    if fsdp and fsdp.cpu_offload:
        options.append("offload")
    config: dict[str, Any] = {
        "backward_prefetch": "backward_pre",
        "forward_prefetch": False,
        "use_orig_params": True,          # peft: frozen and trainable params share flat buffers
        "sync_module_states": True,
        "cpu_ram_efficient_loading": True,
        "activation_checkpointing": job.spec.training.gradient_checkpointing,
    }
    if layer_class:
        config["transformer_layer_cls_to_wrap"] = [layer_class]
    return {"fsdp": " ".join(options), "fsdp_config": config}


def trainer_args(job: FineTuneJob) -> dict[str, Any]:
    """Extra TrainingArguments for the strategy (DDP needs none: torchrun's env is enough)."""
    strategy = job.spec.distribution.strategy
    if strategy == "deepspeed":
        return {"deepspeed": deepspeed_config(job)}
    if strategy == "fsdp":
        return fsdp_trainer_args(job)
    if strategy == "ddp":
        return {"ddp_find_unused_parameters": False}
    return {}


def accelerate_config(job: FineTuneJob) -> dict[str, Any]:
    """An `accelerate launch --config_file` document equivalent to the torchrun launch."""
    d = job.spec.distribution
    distributed_type = {"none": "NO", "ddp": "MULTI_GPU" if d.gpus_per_node else "MULTI_CPU",
                        "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[d.strategy]
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": distributed_type,
        "num_machines": d.nodes,
        "num_processes": world_size(job),
        "machine_rank": 0,
        "main_process_port": MASTER_PORT,
        "mixed_precision": _mixed_precision(job) if d.gpus_per_node else "no",
        "use_cpu": d.gpus_per_node == 0,
        "rdzv_backend": "static",
        "same_network": True,
    }
    if d.strategy == "deepspeed":
        config["deepspeed_config"] = {"deepspeed_config_file": "/etc/tuneops/deepspeed.json"}
    if d.strategy == "fsdp":
        fsdp = d.fsdp
        config["fsdp_config"] = {
            "fsdp_sharding_strategy": (fsdp.sharding_strategy if fsdp else "full_shard").upper(),
            "fsdp_offload_params": bool(fsdp and fsdp.cpu_offload),
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_use_orig_params": True,
            "fsdp_sync_module_states": True,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        }
    return config


def master_address(job_name: str, service: str, namespace: str | None = None) -> str:
    """Pod 0 of an Indexed Job behind a headless Service: <job>-0.<service>[.<namespace>.svc]."""
    host = f"{job_name}-0.{service}"
    return f"{host}.{namespace}.svc" if namespace else host


def node_rank(env: dict[str, str] | None = None) -> int:
    """NODE_RANK, else the Indexed Job's JOB_COMPLETION_INDEX, else 0."""
    env = os.environ if env is None else env
    for key in ("NODE_RANK", "JOB_COMPLETION_INDEX"):
        if env.get(key, "").strip():
            return int(env[key])
    return 0


def launch_env(job: FineTuneJob, *, job_name: str, service: str, namespace: str | None = None) -> dict[str, str]:
    """Environment for every training pod (NODE_RANK is filled per pod from JOB_COMPLETION_INDEX)."""
    env = {"TUNEOPS_NNODES": str(job.spec.distribution.nodes),
           "TUNEOPS_NPROC_PER_NODE": str(processes_per_node(job))}
    if job.spec.distribution.nodes > 1:
        env.update({"MASTER_ADDR": master_address(job_name, service, namespace), "MASTER_PORT": str(MASTER_PORT)})
    return env


def launch_command(job: FineTuneJob, *, spec_path: str, output: str, extra: list[str] | None = None,
                   python: str = "python", env: dict[str, str] | None = None) -> list[str]:
    """The argv the training container runs. One process: plain python; otherwise torchrun with a static
    rendezvous (rank 0 = MASTER_ADDR), node rank from the Indexed Job index."""
    module_args = ["-m", TRAIN_MODULE, "--spec", spec_path, "--output", output, *(extra or [])]
    d = job.spec.distribution
    if d.strategy == "none" and d.nodes == 1 and d.gpus_per_node <= 1:
        return [python, *module_args]
    env = os.environ if env is None else env
    argv = [python, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node(job)}",
            f"--nnodes={d.nodes}"]
    if d.nodes > 1:
        argv += [f"--node-rank={node_rank(env)}", f"--master-addr={env.get('MASTER_ADDR', 'localhost')}",
                 f"--master-port={env.get('MASTER_PORT', MASTER_PORT)}"]
    else:
        argv += ["--standalone"]
    return argv + module_args


def accelerate_command(job: FineTuneJob, *, config_file: str, spec_path: str, output: str,
                       env: dict[str, str] | None = None) -> list[str]:
    d = job.spec.distribution
    env = os.environ if env is None else env
    argv = ["accelerate", "launch", "--config_file", config_file, f"--num_machines={d.nodes}",
            f"--num_processes={world_size(job)}", f"--machine_rank={node_rank(env)}"]
    if d.nodes > 1:
        argv += [f"--main_process_ip={env.get('MASTER_ADDR', 'localhost')}", f"--main_process_port={MASTER_PORT}"]
    return argv + ["-m", TRAIN_MODULE, "--spec", spec_path, "--output", output]


def shell(argv: list[str]) -> str:
    return shlex.join(argv)
