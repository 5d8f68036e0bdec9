"""tests/deploy use the shared real control plane (tests/kube/fixture.py) for the `kube`-marked tests."""
# Re-exporting the hook builds the cluster before the first test (outside its timeout).
from tests.kube.fixture import kube, pytest_collection_finish  # noqa: F401
