"""The estimator against real measurements on CPU: a short real SmolLM2-135M LoRA training run in a fresh
subprocess; its peak RSS growth must be within TOLERANCE of the estimator's CPU prediction for that exact
config (same model, batch, longest sample, gradient checkpointing). No GPU here: the CUDA side of the
estimate (bf16, context overhead) is not measured by this test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.train.helpers import REPO

TOLERANCE = 0.35


def probe(config: dict, run_dir) -> dict:
    res = subprocess.run([sys.executable, "-m", "tests.plan.rss_probe", json.dumps(config), str(run_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RSS_PROBE "))
    return json.loads(line[len("RSS_PROBE "):])


@pytest.mark.slow
def test_lora_cpu_estimate_matches_peak_rss(smollm2_dir, tmp_path):
    # Two optimizer steps: the optimizer states exist after the first, so the peak is reached.
    out = probe({"method": "lora", "gradientCheckpointing": False, "steps": 2}, tmp_path / "run")
    measured, estimated = out["measuredGrowthGiB"], out["estimatedGiB"]
    assert out["steps"] == 2 and len(out["microBatchTokens"]) == 2
    assert abs(estimated - measured) <= TOLERANCE * measured, out
    # The planner's own figure (batch x longest sample) is an upper bound of the exact one.
    assert out["plannerGiB"] >= estimated
