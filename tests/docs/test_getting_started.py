"""The newcomer path: docs/getting-started.md, every marked block in order, in a fresh copy of the repository.

Real everything: `bash scripts/setup` (into a virtual environment that sees the machine's installed packages,
so the shared editable install is left alone and nothing large is downloaded again), the embedded run of the
real SmolLM2-135M (the suite's only full run of it), `tuneops report`/`versions`, the TGI-compatible server
and one `huggingface_hub` call against it, and the MLflow UI. TUNEOPS_HOME is the copy's `.tuneops` (the page
uses relative paths, as a reader in a clone would). The one shortcut: the base model's safetensors folder is
linked from the test suite's shared, content-addressed models cache when it exists (the GGUF
dequantisation, 1-2 min, is covered by the models tests), so this test spends its time on the newcomer path.
"""

import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.smollm2 import shared_home

from .blocks import REPO, blocks
from .runner import Session, port_free, repo_copy

PAGE = Path("docs/getting-started.md")


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_getting_started_page_runs(tmp_path):
    import subprocess

    page_blocks = blocks(REPO / PAGE)
    for block in page_blocks:
        if block.marker and block.marker.wait:
            assert port_free(block.marker.wait), f"{block.marker.wait} is already taken: the page's server cannot start"

    work = repo_copy(tmp_path / "tuneops")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    home = work / ".tuneops"
    shared_models = shared_home() / "models"
    if shared_models.is_dir():
        home.mkdir()
        (home / "models").symlink_to(shared_models, target_is_directory=True)
    # A reader's shell: no test-suite settings. (Not HF_HUB_OFFLINE either: tuneops sets it itself where it
    # loads models, and huggingface_hub's offline mode would refuse the page's client call to the server.)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH", "VIRTUAL_ENV", "HF_HUB_OFFLINE")}
    env.update(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv), TUNEOPS_HOME=str(home))

    session = Session(work, env, tmp_path)
    started = time.monotonic()
    try:
        for block in blocks(work / PAGE):
            session.run(block)
        # The commands ran the copy's code from the virtual environment that `scripts/setup` installed into.
        where = subprocess.run(["tuneops", "version"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert where.returncode == 0, where.stderr
        origin = subprocess.run(["python", "-I", "-c", "import tuneops; print(tuneops.__file__)"], env=env,
                                cwd=tmp_path, capture_output=True, text=True)
        assert origin.stdout.strip().startswith(str(work)), origin.stdout + origin.stderr
    finally:
        session.close()
        report = "\n".join(f"  {where}: {seconds:.0f}s" for where, seconds in session.timings)
        print(f"\ngetting-started blocks ({time.monotonic() - started:.0f}s in all):\n{report}")

    run = home / "runs" / "support-triage-smollm2"
    for produced in ("training-curve.png", "data/datacard.md", "data/lengths.png", "eval/evaluation.json",
                     "eval/report.md", "eval/curves.png", "adapter/COMPLETE"):
        assert (run / produced).is_file(), f"the page promises {produced}"
    assert (home / "registry" / "support-triage" / "1" / "modelversion.yaml").is_file()
