import numpy as np
import polars as pl
import pytest

from modalrec.data.prepared import write_prepared
from modalrec.data.synthetic import generate
from modalrec.encode.cache import write_features

DS = "tiny"


def make_project(root, n_items=50, missing_image=(3, 9)):
    """A tiny prepared dataset plus random image (1280-d, some missing) and text (384-d) feature caches."""
    inter, items = generate(n_users=100, n_items=n_items, n_interactions=900, image_size=16, seed=3)
    items = items.with_row_index("item", offset=1).with_columns(pl.col("item").cast(pl.Int32))
    index = dict(zip(items["item_orig"].to_list(), items["item"].to_list()))
    inter = inter.sort(["user_orig", "timestamp", "order"])
    users = {u: i for i, u in enumerate(dict.fromkeys(inter["user_orig"].to_list()))}
    inter = inter.with_columns(pl.col("user_orig").replace_strict(users, return_dtype=pl.Int32).alias("user"),
                               pl.col("item_orig").replace_strict(index, return_dtype=pl.Int32).alias("item"))
    seqs = inter.group_by("user", maintain_order=True).agg(pl.col("item").alias("items"))
    lens = seqs["items"].list.len().to_numpy()
    n_test = np.maximum(1, (lens * 0.2).astype(int))
    split = seqs.with_columns(pl.Series("n_train", lens - n_test - 1), pl.Series("n_valid", np.ones_like(lens)))
    write_prepared(root / "data" / "prepared" / DS, inter, items, split, stats={},
                   meta={"dataset": DS, "split": {"name": "ratio", "test": 0.2, "valid": 1}})
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
            "kdsr": {"D": 4, "codes": 6, "quantizer": "kmeans", "xi": "cos",
                     "pairs": {"cooccur": 3000, "random": 1000, "exact": False},
                     "quantizer_options": {"niter": 10}, **kdsr}}


@pytest.fixture
def project(tmp_path):
    n = make_project(tmp_path)
    return tmp_path, n
