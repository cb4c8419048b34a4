import numpy as np
import pytest

from modalrec.encode.cache import write_features
from tiny_data import write_tiny_prepared

DS = "tiny"


def make_project(root, n_items=50, missing_image=(3, 9)):
    """A tiny prepared dataset plus random image (1280-d, some missing) and text (384-d) feature caches."""
    items = write_tiny_prepared(root / "data" / "prepared" / DS, DS, n_items=n_items)
    n = len(items)
    rng = np.random.default_rng(0)
    has = np.ones(n, bool)
    has[list(missing_image)] = False
    write_features(root / "data" / "features" / DS / "image.parquet",
                   rng.random((n, 1280), dtype=np.float32), has, meta={"family": "test"})
    write_features(root / "data" / "features" / DS / "text.parquet",
                   rng.normal(size=(n, 384)).astype(np.float32), np.ones(n, bool), meta={"family": "test"})
    return n


def small_params(**kdsr):
    return {"base": {"dataset": DS, "seed": 7},
            "compress": {"modalities": ["image", "text"], "dim": 16, "lr": 1e-2, "batch_size": 32, "max_epochs": 20,
                         "check_every": 5, "patience": 2, "min_delta": 1e-3, "device": "cpu"},
            "kdsr": {"seed": 7, "D": 4, "codes": 6, "quantizer": "kmeans", "xi": "cos", "center": True,
                     "pairs": {"cooccur": 3000, "random": 1000, "exact": False},
                     "quantizer_options": {"niter": 10}, **kdsr}}


@pytest.fixture
def project(tmp_path):
    n = make_project(tmp_path)
    return tmp_path, n
