"""Fixtures for the infra tests: the Pulumi program built under Pulumi's mocks from the real stack files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

try:
    import pulumi  # noqa: F401
    import pulumi_aws  # noqa: F401
    import pulumi_kubernetes  # noqa: F401

    HAVE_PULUMI = True
except ImportError:
    HAVE_PULUMI = False

needs_pulumi = pytest.mark.skipif(not HAVE_PULUMI, reason="pulumi SDKs not installed: pip install -e '.[infra]'")


class Built:
    """One mocked build: the config, every registered resource and the stack outputs."""

    def __init__(self, cfg, resources, outputs):
        self.cfg, self.resources, self.outputs = cfg, resources, outputs

    def of_type(self, type_: str):
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str):
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name}, got {len(matches)}"
        return matches[0]


def build(cfg) -> Built:
    from .harness import run_program

    return Built(cfg, *run_program(cfg))


@pytest.fixture(scope="session")
def dev():
    if not HAVE_PULUMI:
        pytest.skip("pulumi SDKs not installed: pip install -e '.[infra]'")
    from tuneops_infra.config import load_stack_file

    return build(load_stack_file(INFRA_DIR / "Pulumi.dev.yaml"))


@pytest.fixture(scope="session")
def prod():
    if not HAVE_PULUMI:
        pytest.skip("pulumi SDKs not installed: pip install -e '.[infra]'")
    from tuneops_infra.config import load_stack_file

    # Secrets are not in the file (they would be encrypted); the program only needs a value to pass on.
    return build(load_stack_file(INFRA_DIR / "Pulumi.prod.yaml", mlflow_db_password="not-a-real-password"))


@pytest.fixture(params=["dev", "prod"])
def stack(request):
    return request.getfixturevalue(request.param)
