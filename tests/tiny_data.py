"""A tiny prepared dataset for stage tests (no filtering, ratio split with one validation item per user), shared by
the train, teacher and KDSR stage tests. Import as ``from tiny_data import write_tiny_prepared`` (pytest puts
``tests/`` on sys.path for the root conftest)."""

from pathlib import Path

import numpy as np
import polars as pl

from modalrec.data.prepared import write_prepared
from modalrec.data.synthetic import generate


def write_tiny_prepared(out_dir: Path, dataset: str, n_users: int = 100, n_items: int = 50,
                        n_interactions: int = 900, seed: int = 3) -> pl.DataFrame:
    """Generate a synthetic catalogue, index it 1..N, split 80/20 per user (last train item = validation), write it
    to ``out_dir`` and return the items table."""
    inter, items = generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions, image_size=16, seed=seed)
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
    write_prepared(out_dir, inter, items, split, stats={},
                   meta={"dataset": dataset, "split": {"name": "ratio", "test": 0.2, "valid": 1}})
    return items
