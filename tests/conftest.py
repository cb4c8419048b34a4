import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch loads OpenMP: set before any import

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets, or skip the test cleanly when it is absent."""
    d = SHARED / "datasets"
    if not d.is_dir():
        pytest.skip("../shared/datasets is absent")
    return d


@pytest.fixture(scope="session")
def dvc_pipeline(tmp_path_factory):
    """The repository's dvc.yaml/params.yaml as DVC tracks them, no stage run (tests/dvc_tracking.py); shared by the
    tests of what `dvc exp run -S <key>` re-runs."""
    from dvc_tracking import open_dvc_project

    with open_dvc_project(tmp_path_factory.mktemp("dvc_pipeline"), ROOT) as p:
        yield p
