from tests.support.mlflow_server import mlflow_server  # noqa: F401
from tests.support.smollm2 import smollm2_dir  # noqa: F401
