"""Performance by item-popularity group (ODMT Fig. 4) for one summary table.

Group 0 = test targets never seen in training, groups 1..G = the seen items split by training count into G groups
of equal item count (:func:`modalrec.report.plots.popularity_groups`). The training counts come from the dataset's
``data/prepared/<ds>/split.parquet`` (:func:`train_counts_from_split`), or, without it, from the training-count
column the evaluate stage records next to each rank in ``per_user.parquet``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError
from . import plots as P
from .aggregate import Table
from .collect import Run

POPULARITY_COLUMNS = ("train_count", "target_count", "target_train_count", "popularity", "target_popularity",
                      "item_count", "count")


def train_counts_from_split(path: Path) -> np.ndarray | None:
    """Training popularity of every item id (index = item) from ``split.parquet``; None when absent."""
    if not path.exists():
        return None
    try:
        df = pl.read_parquet(path, columns=["items", "n_train"])
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read the split: {e}", path=path) from None
    train = df.select(pl.col("items").list.head(pl.col("n_train")).alias("t")).explode("t")["t"].drop_nulls()
    all_items = df.select(pl.col("items").explode())["items"].drop_nulls()
    n = int(all_items.max()) if len(all_items) else 0
    return np.bincount(train.to_numpy().astype(np.int64), minlength=n + 1)


def popularity_analysis(t: Table, runs: list[Run], counts: np.ndarray | None, popularity: dict[str, Any],
                        plot_dir: Path, slug: str) -> tuple[dict[str, Any] | None, str | None]:
    """Per-model metric by popularity group for one table (``popularity``: the ``report.popularity`` options);
    writes ``<plot_dir>/<slug>_popularity.png`` and its TSVs; returns (summary.json entry, note)."""
    G = int(popularity.get("groups", 5))
    metric = str(popularity.get("metric", "ndcg@10"))
    name, k = metric.split("@")
    frames: dict[str, list[tuple[Path, pl.DataFrame]]] = {}
    for r in runs:
        if r.dataset == t.dataset and r.model in t.models and r.per_user_path.exists():
            df = pl.read_parquet(r.per_user_path)
            tgt = next((c for c in ("target", "item") if c in df.columns), None)
            if tgt is None or "rank" not in df.columns:
                raise DataError(f"needs columns 'target' and 'rank' for the popularity analysis; has {df.columns}",
                                path=r.per_user_path)
            frames.setdefault(r.model, []).append((r.per_user_path, df))
    if not frames:
        return None, "popularity groups skipped: no per_user.parquet files"
    if counts is None:  # fall back to the training counts recorded next to the ranks
        pairs = []
        for dfs in frames.values():
            for _, df in dfs:
                pc = next((c for c in POPULARITY_COLUMNS if c in df.columns), None)
                if pc is not None:
                    tgt = "target" if "target" in df.columns else "item"
                    pairs.append(df.select(pl.col(tgt).cast(pl.Int64).alias("i"),
                                           pl.col(pc).cast(pl.Int64).alias("c")))
        if not pairs:
            return None, ("popularity groups skipped: neither data/prepared/<ds>/split.parquet nor a training-count "
                          "column in per_user.parquet")
        pc_df = pl.concat(pairs).unique("i").sort("i")
        counts = np.zeros(int(pc_df["i"].max()) + 1, dtype=np.int64)
        counts[pc_df["i"].to_numpy()] = pc_df["c"].to_numpy()
    groups = P.popularity_groups(counts, G)
    n_groups = int(groups.max()) if len(groups) else 0
    values: dict[str, list[float]] = {}
    n_inst: list[int] = []
    for m in t.models:
        if m not in frames:
            continue
        per_seed = []
        for path, df in frames[m]:
            tgt = "target" if "target" in df.columns else "item"
            targets = df[tgt].to_numpy().astype(np.int64)
            if len(targets) and targets.max() >= len(groups):
                raise DataError(f"target item {int(targets.max())} is outside the catalogue (N={len(groups) - 1})",
                                path=path)
            means, n_inst = P.group_metric(targets, df["rank"].to_numpy(), groups, int(k), name, n_groups)
            per_seed.append(means)
        arr = np.asarray(per_seed, dtype=np.float64)  # [seeds, groups]; NaN = empty group
        n_ok = (~np.isnan(arr)).sum(0)
        mean = np.where(n_ok > 0, np.nansum(arr, 0) / np.maximum(n_ok, 1), math.nan)
        values[m] = [float(v) for v in mean]
    png = P.plot_groups(values, n_inst, metric, f"{t.dataset}: {metric} by item popularity",
                        plot_dir / f"{slug}_popularity.png")
    for m, v in values.items():
        P.write_tsv(plot_dir / "data" / "popularity" / slug / f"{P.slug(m)}.tsv", ["group", "value", "n"],
                    [(g, v[g], n_inst[g]) for g in range(len(v))])
    return {"metric": metric, "groups": n_groups, "instances": n_inst, "values": values, "png": png.name}, None
