from __future__ import annotations

from pathlib import Path

import pytest

from .tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path):
    """One loaded tiny model shared by every server in the session (loading is the slow part)."""
    from tuneops.runtime.serve.loader import load

    return load(str(tiny_model_dir))
