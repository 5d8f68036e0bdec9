"""Speed of the training path where TRL's defaults waste work (measured by bench/train_bench.py).

- `configure_cpu_threads()`: torch's intra-op threads = the cores this process may really use (affinity mask
  and cgroup CPU quota, shared among the local ranks). A pod limited to 2 CPUs on a 64-core node otherwise
  runs 64 threads that the CFS quota throttles.
- `sft_trainer_class()`: TRL's SFTTrainer whose LM head projects only the positions whose next token is a
  label. Off GPUs, TRL's fused head projects *every* position onto the whole vocabulary (49k for SmolLM2),
  twice (its backward recomputes the projection), and computes entropy over all of them; with completion-only
  loss most positions are prompt tokens whose logits nobody reads. The loss is the same (tests/train).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Above this many bytes of fp32 logits (logits + log-softmax + their gradient), defer to TRL's chunked head.
COMPACT_LOGITS_BUDGET = 1 << 30


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU quota in cores (cgroup v2 `cpu.max`, else v1 `cfs_quota_us`), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    return max(1, min(cpus, math.ceil(limit))) if limit else max(1, cpus)


def cpu_threads(env: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT) -> int:
    """Threads per process: the usable cores divided among this node's ranks (torchrun sets LOCAL_WORLD_SIZE)."""
    local_ranks = max(1, int(env.get("LOCAL_WORLD_SIZE") or 1))
    return max(1, available_cpus(root) // local_ranks)


def configure_cpu_threads(env: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT) -> int | None:
    """Set torch's intra-op threads from `cpu_threads()`; an explicit OMP_NUM_THREADS wins (None then).

    Inter-op threads are left alone: eager training does not use them, and torch refuses to change them once
    any parallel work ran in the process."""
    import torch

    if env.get("OMP_NUM_THREADS"):
        return None
    threads = cpu_threads(env, root)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _accepts_logits_to_keep(model: Any) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(type(inner).forward).parameters
    except (TypeError, ValueError):
        return False


def sft_trainer_class():
    """SFTTrainer with the label-positions-only LM head (see the module docstring)."""
    import torch
    from trl import SFTTrainer

    class TuneopsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            keep = None if return_outputs else self._label_positions(inputs)
            if keep is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            return self._label_positions_loss(model, inputs, keep, num_items_in_batch)

        def _label_positions(self, inputs):
            """Where to compute logits (position t scores token t+1), or None to keep TRL's own head: on GPUs
            (TRL's Triton head already skips unlabelled positions, in tiles), and for the losses and
            parallelism modes TRL handles specially."""
            labels, input_ids = inputs.get("labels"), inputs.get("input_ids")
            if labels is None or input_ids is None or input_ids.device.type != "cpu":
                return None
            if (self.compute_loss_func is not None or self.label_smoother is not None
                    or self.args.loss_type != "nll" or getattr(self, "aux_loss_enabled", False)
                    or getattr(self.accelerator, "parallelism_config", None) is not None):
                return None
            if not hasattr(self, "_tuneops_logits_to_keep"):
                self._tuneops_logits_to_keep = _accepts_logits_to_keep(self.accelerator.unwrap_model(self.model))
            if not self._tuneops_logits_to_keep:
                return None
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100
            vocab = self.accelerator.unwrap_model(self.model).get_output_embeddings().weight.shape[0]
            count = int(keep.sum())
            if count == 0 or 3 * 4 * count * vocab > COMPACT_LOGITS_BUDGET:
                return None
            return keep

        def _label_positions_loss(self, model, inputs, keep, num_items_in_batch):
            # Same reduction as TRL's nll loss: summed over label tokens, divided by the tokens in the whole
            # (accumulated) batch.
            targets = inputs["labels"][:, 1:][keep[:, :-1]]
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward.update(use_cache=False, logits_to_keep=keep)  # a bool mask: logits come back [n_labels, vocab]
            logits = model(**forward).logits.float()
            log_probs = torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
            token_log_probs = log_probs.gather(-1, targets[:, None]).squeeze(-1)
            denominator = targets.numel() if num_items_in_batch is None else num_items_in_batch
            loss = -token_log_probs.sum() / torch.as_tensor(denominator, device=logits.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            self._record_token_metrics(inputs, log_probs.detach(), targets)
            return loss

        def _record_token_metrics(self, inputs, log_probs, targets):
            """The entropy / mean_token_accuracy / num_tokens metrics TRL logs, from the label positions only."""
            mode = "train" if self.model.training else "eval"
            gather = self.accelerator.gather_for_metrics
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            correct = log_probs.argmax(-1) == targets
            valid = gather(torch.tensor(targets.numel(), device=targets.device)).sum()
            entropy_sum = gather(entropy.sum()).sum()
            correct_sum = gather(correct.sum()).sum()
            self._metrics[mode]["entropy"].append((entropy_sum / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((correct_sum / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                if "attention_mask" in inputs:
                    local = inputs["attention_mask"].sum()
                else:  # padding-free: one flat row of real tokens
                    local = torch.tensor(inputs["input_ids"].size(1), device=targets.device)
                self._total_train_tokens += gather(local).sum().item() // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    return TuneopsSFTTrainer
