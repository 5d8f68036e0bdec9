"""The training path's speed changes keep the training the same: the label-positions-only LM head gives
TRL's loss, gradients and metrics, and thread settings follow the cores the process may use."""

from __future__ import annotations

import pytest
import torch

from tests.train.helpers import parse_job, tiny_job
from tuneops.runtime.sft_speed import available_cpus, cgroup_cpu_limit, configure_cpu_threads, cpu_threads


def _cgroup(tmp_path, cpu_max: str | None = None, v1: tuple[int, int] | None = None):
    tmp_path.mkdir(parents=True)
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


def test_cgroup_quota_is_read_from_v2_and_v1(tmp_path):
    assert cgroup_cpu_limit(_cgroup(tmp_path / "a", "150000 100000")) == 1.5
    assert cgroup_cpu_limit(_cgroup(tmp_path / "b", "max 100000")) is None
    assert cgroup_cpu_limit(_cgroup(tmp_path / "c", v1=(200000, 100000))) == 2.0
    assert cgroup_cpu_limit(_cgroup(tmp_path / "d", v1=(-1, 100000))) is None
    assert cgroup_cpu_limit(_cgroup(tmp_path / "e")) is None


def test_threads_follow_the_quota_and_are_shared_by_local_ranks(tmp_path):
    import os

    usable = len(os.sched_getaffinity(0))
    unlimited = _cgroup(tmp_path / "u", "max 100000")
    one_and_a_half = _cgroup(tmp_path / "q", "150000 100000")
    assert available_cpus(unlimited) == usable
    assert available_cpus(one_and_a_half) == min(usable, 2)  # a fractional quota rounds up
    assert cpu_threads({"LOCAL_WORLD_SIZE": str(usable * 4)}, unlimited) == 1
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads({"OMP_NUM_THREADS": "1"}, one_and_a_half) is None  # the user's choice wins
        assert torch.get_num_threads() == before
        assert configure_cpu_threads({}, _cgroup(tmp_path / "one", "100000 100000")) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _trainer(cls, job, tokenizer, train_set, out):
    from tuneops.runtime.train import build_model, build_sft_config

    torch.manual_seed(0)  # the same LoRA initialisation for every trainer
    model = build_model(job)
    config = build_sft_config(job, out, has_eval=True, disable_tqdm=True)
    return cls(model=model, args=config, train_dataset=train_set, eval_dataset=train_set, processing_class=tokenizer)


@pytest.mark.parametrize("packing", [False, True])
def test_label_positions_head_gives_trls_loss_gradients_and_metrics(tiny_llama_dir, tmp_path, packing):
    from trl import SFTTrainer

    from tuneops.runtime.models import load_tokenizer
    from tuneops.runtime.sft_speed import sft_trainer_class
    from tuneops.runtime.training_data import load_split, prepare_training_data

    doc = tiny_job(tiny_llama_dir, maxSteps=2, batchSize=4, packing=packing)
    doc["spec"]["lora"]["dropout"] = 0.0  # deterministic forward, so the two trainers can be compared exactly
    job = parse_job(doc)
    data = prepare_training_data(job.spec.dataset, out_dir=tmp_path / "data")
    train_set = load_split(data.train_path).select(range(16))
    tokenizer = load_tokenizer(job.spec.base_model)
    fast = _trainer(sft_trainer_class(), job, tokenizer, train_set, tmp_path / "fast")
    plain = _trainer(SFTTrainer, job, tokenizer, train_set, tmp_path / "plain")
    batch = next(iter(fast.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one flat, padding-free row
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["input_ids"].shape[1] // 2  # completion-only: most positions are prompt

    head_rows: list[int] = []
    fast.model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    losses, grads = {}, {}
    for name, trainer in (("fast", fast), ("plain", plain)):
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(labelled))
        loss.backward()
        losses[name] = loss.detach()
        grads[name] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert head_rows == [labelled]  # the LM head ran on the label positions only
    torch.testing.assert_close(losses["fast"], losses["plain"], rtol=1e-5, atol=1e-6)
    assert grads["fast"].keys() == grads["plain"].keys() and grads["fast"]
    for name, grad in grads["fast"].items():
        torch.testing.assert_close(grad, grads["plain"][name], rtol=1e-4, atol=1e-6, msg=name)
    for metric in ("entropy", "mean_token_accuracy"):
        assert fast._metrics["train"][metric] == pytest.approx(plain._metrics["train"][metric], rel=1e-4)
    assert fast._metrics["train"]["num_tokens"] == plain._metrics["train"]["num_tokens"]

    # Evaluation goes through the same head and gives the same held-out loss.
    assert fast.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=1e-5)


def test_losses_trl_computes_specially_keep_trls_head(tiny_llama_dir, tmp_path):
    from tuneops.runtime.models import load_tokenizer
    from tuneops.runtime.sft_speed import sft_trainer_class
    from tuneops.runtime.training_data import load_split, prepare_training_data

    job = parse_job(tiny_job(tiny_llama_dir, maxSteps=1))
    data = prepare_training_data(job.spec.dataset, out_dir=tmp_path / "data")
    train_set = load_split(data.train_path).select(range(8))
    trainer = _trainer(sft_trainer_class(), job, load_tokenizer(job.spec.base_model), train_set, tmp_path / "out")
    batch = next(iter(trainer.get_train_dataloader()))
    assert trainer._label_positions(batch) is not None
    trainer.args.loss_type = "dft"  # DFT weights each token by its probability: TRL's own head does it
    assert trainer._label_positions(batch) is None
    trainer.args.loss_type = "nll"
    unlabelled = {**batch, "labels": torch.full_like(batch["labels"], -100)}
    assert trainer._label_positions(unlabelled) is None  # nothing to score: TRL returns its differentiable zero
