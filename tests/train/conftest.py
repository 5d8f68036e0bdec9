from tests.support.mlflow_server import mlflow_server  # noqa: F401
from tests.support.smollm2 import smollm2_dir  # noqa: F401

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random llama3-family checkpoint (seconds to train)."""
    from tests.support.tiny_models import tiny_model_dir

    return tiny_model_dir("llama3", tmp_path_factory.mktemp("tiny") / "llama3")
