"""Fixtures for tests against a real Kubernetes control plane (see fixture.py)."""
# Re-exporting the hook builds the cluster before the first test (outside its timeout).
from tests.kube.fixture import kube, pytest_collection_finish  # noqa: F401
