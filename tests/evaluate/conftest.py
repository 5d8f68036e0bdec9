from __future__ import annotations

from pathlib import Path

import pytest

from . import tiny


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    return tiny.build_base_dir(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_base_dir, tmp_path_factory) -> Path:
    return tiny.build_adapter(tiny_base_dir, tmp_path_factory.mktemp("tiny-adapter"))


from tests.support.mlflow_server import mlflow_server  # noqa: E402,F401  (a real `mlflow server` process)
from tests.support.smollm2 import smollm2_dir  # noqa: E402,F401
