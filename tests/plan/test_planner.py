"""The cheap plan the operator runs (tuneops.planning.plan_job): checks, selection, suggestion."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.train.helpers import REPO
from tuneops.api import FineTuneJobSpec
from tuneops.planning import plan_job


def _spec(name: str = "llama3-qlora.yaml", **changes) -> FineTuneJobSpec:
    doc = yaml.safe_load((REPO / "examples" / name).read_text())["spec"]
    for path, value in changes.items():
        node = doc
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = copy.deepcopy(value)
    return FineTuneJobSpec.model_validate(doc)


def _check(plan, name):
    return next(c for c in plan.checks if c.name == name)


def test_qlora_example_fits_its_a10g():
    plan = plan_job(_spec())
    assert plan.ok and plan.model == "Llama-3-8B"
    selected = plan.selected()
    assert (selected.method, selected.strategy, selected.processes) == ("qlora", "deepspeed-zero2", 2)
    assert sum(m.selected for m in plan.memory) == 1 and {m.method for m in plan.memory} == {"full", "lora", "qlora"}
    assert 10 < selected.total_gib <= 22.0 and "<= 22.0 GiB usable on A10G-24G" in _check(plan, "memory").message


def test_too_large_micro_batch_fails_memory_and_says_what_fits():
    plan = plan_job(_spec(**{"training.batchSize": 16}))
    mem = _check(plan, "memory")
    assert not plan.ok and not mem.ok and "NVIDIA-A10G" in mem.message and "22.0 GiB usable" in mem.message
    assert "training.batchSize 8 with gradientAccumulationSteps 8 (same effective batch)" in mem.message
    assert plan.suggestion.gpu == "L40S-48G" and plan.suggestion.per_gpu_gib <= plan.suggestion.usable_gib
    assert plan_job(_spec(**{"training.batchSize": 8, "training.gradientAccumulationSteps": 8})).ok


def test_full_fine_tuning_of_8b_on_one_t4_fails_and_suggests_sharding():
    plan = plan_job(_spec(**{"method": "full", "lora": None, "quantization": None,
                             "distribution": {"strategy": "none"}, "resources.gpu": {"count": 1, "product": "Tesla-T4"}}))
    mem = _check(plan, "memory")
    assert not mem.ok and "T4-16G" in mem.message
    # bf16 weights + grads + AdamW m, v (8 B/param) + activations + logits ~ 66 GiB: one 80 GB card
    assert (plan.suggestion.gpu, plan.suggestion.count, plan.suggestion.strategy) == ("A100-80G", 1, "single")
    big = plan_job(_spec(**{"method": "full", "lora": None, "quantization": None,
                            "baseModel.source": {"hf": "meta-llama/Llama-3.1-70B-Instruct"},
                            "distribution": {"strategy": "none"}, "resources.gpu": {"count": 1, "product": "Tesla-T4"}}))
    assert big.model == "Llama-3.1-70B" and big.parameters == 70_553_706_496
    assert big.suggestion.strategy == "deepspeed-zero3" and big.suggestion.count >= 8
    assert big.suggestion.per_gpu_gib <= big.suggestion.usable_gib


def test_unknown_target_module_names_the_field_and_the_choices():
    plan = plan_job(_spec(**{"lora.targetModules": ["q_proj", "q_projx"]}))
    check = _check(plan, "lora.targetModules")
    assert not check.ok
    assert check.message.startswith("lora.targetModules: 'q_projx' not found in Llama-3-8B; available: q_proj, k_proj")


def test_cpu_job_compares_with_resources_memory():
    plan = plan_job(_spec("smollm2-lora.yaml"))
    assert plan.ok and plan.device == "cpu" and _check(plan, "memory").skipped
    tight = plan_job(_spec("smollm2-lora.yaml", **{"resources.memory": "1Gi"}))
    assert not tight.ok and "resources.memory 1Gi" in _check(tight, "memory").message
    assert plan_job(_spec("smollm2-lora.yaml", **{"resources.memory": "16Gi"})).ok


def test_unknown_architecture_is_skipped_not_guessed():
    plan = plan_job(_spec("smollm2-lora.yaml", **{"baseModel": {"family": "llama3", "source": {"path": "/models/x"}}}))
    assert plan.ok and plan.memory == [] and _check(plan, "architecture").skipped


def test_unlisted_gpu_product_is_skipped_with_the_estimate():
    plan = plan_job(_spec(**{"resources.gpu": {"count": 1, "product": "NVIDIA-B200"}}))
    mem = _check(plan, "memory")
    assert mem.ok and mem.skipped and "not in the GPU table" in mem.message


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device_hint_overrides(device):
    plan = plan_job(_spec(), device=device)
    assert plan.device == device and all((m.overhead_gib == 0) == (device == "cpu") for m in plan.memory)
