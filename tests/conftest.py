import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch loads OpenMP: set before any import

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TESTS = ROOT / "tests"

# Test directories of tiny models, run on one intra-op thread: that avoids OpenMP spin-waiting on a busy 2-core
# machine (10-100x slower). The value is the fixture scope the setting holds for: "module" also covers the module's
# own module-scoped fixtures; odmt's pins each test only, so its module fixtures (stage runs, encoders) keep the
# default thread count.
ONE_THREAD_DIRS = {"evaluate": "module", "kdsr": "module", "models": "module", "train": "module", "odmt": "function"}


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


def _one_thread_fixture(scope: str):
    """The autouse fixture of ``scope`` that pins ``torch.set_num_threads(1)`` for the tests of the ONE_THREAD_DIRS
    directories with that scope, restoring the previous count afterwards; elsewhere it does nothing."""

    @pytest.fixture(autouse=True, scope=scope, name=f"_one_thread_{scope}")
    def fixture(request):
        path = Path(request.path)
        if not path.is_relative_to(TESTS) or ONE_THREAD_DIRS.get(path.relative_to(TESTS).parts[0]) != scope:
            yield
            return
        import torch

        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)

    return fixture


_one_thread_module = _one_thread_fixture("module")
_one_thread_function = _one_thread_fixture("function")
