"""Preflight planning: memory, GPU and time estimates and cheap checks for a FineTuneJob.

stdlib + tuneops.api only, so both the operator (no torch) and the runtime/CLI may import it.
"""

from .architectures import BUILTIN, Architecture, from_config, lookup, lora_params
from .gpus import GPUS, Gpu, find_gpu
from .memory import Setup, estimate, grid, setup_from_spec
from .planner import failure_message, plan_job
from .throughput import flops_per_token, time_estimate

__all__ = ["BUILTIN", "GPUS", "Architecture", "Gpu", "Setup", "estimate", "failure_message", "find_gpu",
           "flops_per_token", "from_config", "grid", "lookup", "lora_params", "plan_job", "setup_from_spec",
           "time_estimate"]
