from tests.support.smollm2 import smollm2_dir  # noqa: F401
