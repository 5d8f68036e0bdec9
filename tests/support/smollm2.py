"""Session fixture: the packaged SmolLM2-135M-Instruct, materialised once into a shared, content-addressed
models cache (the repo's git-ignored .tuneops/ unless TUNEOPS_TEST_HOME says otherwise), so the ~1-2 min
GGUF dequantisation happens once per machine, not once per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_home() -> Path:
    return Path(os.environ.get("TUNEOPS_TEST_HOME", REPO / ".tuneops"))


def smollm2_base_spec():
    from tuneops.api.model_source import BaseModelSpec

    return BaseModelSpec.model_validate({"family": "smollm2", "source": {"packaged": "smollm2-135m-instruct"}})


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """A local safetensors directory of the real SmolLM2-135M-Instruct."""
    from tuneops.runtime.models import resolve_model_dir

    return resolve_model_dir(smollm2_base_spec(), home=shared_home())
