"""The TUNEOPS_HOME layout (see docs/dev/contracts.md, "Local state"), in one place."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = ".tuneops"


def tuneops_home(home: Path | str | None = None) -> Path:
    """The explicit `home`, else $TUNEOPS_HOME, else ./.tuneops (made absolute so child processes agree)."""
    chosen = home if home is not None else os.environ.get("TUNEOPS_HOME", DEFAULT_HOME)
    return Path(chosen).expanduser().resolve()


def models_dir(home: Path | str | None = None) -> Path:
    return tuneops_home(home) / "models"


def run_dir(job_name: str, home: Path | str | None = None) -> Path:
    return tuneops_home(home) / "runs" / job_name


def registry_dir(home: Path | str | None = None) -> Path:
    return tuneops_home(home) / "registry"


def mlflow_default_uri(home: Path | str | None = None) -> str:
    """The embedded default tracking store: sqlite next to the runs (artifacts in mlartifacts/)."""
    return f"sqlite:///{tuneops_home(home) / 'mlflow.db'}"


def mlflow_artifacts_dir(home: Path | str | None = None) -> Path:
    return tuneops_home(home) / "mlartifacts"


# Names inside one run directory (== a training pod's output volume).
class RunLayout:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"
