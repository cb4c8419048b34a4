"""Prepare stage: ``datasets.<name>`` params + raw files -> ``data/prepared/<name>/`` (see docs/prepare.md).

read (a format's reader, or the synthetic generator) -> filter (rating, chronological order, duplicates, core-k,
min length / window) -> re-index -> split -> items table joined to the surviving items -> stats -> one atomic write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .. import wall_seconds
from ..data.filtering import FilterConfig, filter_interactions, sequences_table
from ..data.prepared import text_fields, write_prepared
from ..data.splits import SplitConfig, split_lengths, summary
from ..errors import EmptyResultError, ParamError
from ..params import get

ENTRY_KEYS = ("format", "path", "options", "filter", "split")


def load_raw(entry: dict[str, Any], key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run the entry's reader (or the synthetic generator) -> (interactions, items) per the reader contract."""
    fmt = entry.get("format")
    if fmt is None:
        raise ParamError(f"{key}.format", "missing (e.g. user_sequence, ml100k, rechorus, synthetic)")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ParamError(f"{key}.options", f"must be a mapping, got {options!r}")
    if fmt == "synthetic":
        from ..data import synthetic  # lazy: the generator pulls in PIL

        return synthetic.generate(**options)
    from ..data import readers

    if not entry.get("path"):
        raise ParamError(f"{key}.path", f"missing: where the raw {fmt!r} files are")
    if fmt not in readers.FORMATS:
        raise ParamError(f"{key}.format", f"unknown dataset format {fmt!r} (known: {sorted(readers.FORMATS) + ['synthetic']})")
    return readers.read(fmt, entry["path"], options, key=key)


def build_items(inter: pl.DataFrame, raw_items: pl.DataFrame) -> pl.DataFrame:
    """One row per surviving item 1..N, its metadata left-joined on ``item_orig`` (absent metadata -> nulls)."""
    ids = inter.select("item", "item_orig").unique("item").sort("item")
    meta = raw_items.unique("item_orig", keep="first", maintain_order=True)
    items = ids.join(meta, on="item_orig", how="left").sort("item")
    for c, t in (("image_path", pl.String), ("image_bytes", pl.Binary)):
        if c not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=t).alias(c))
    return items


def dataset_stats(inter: pl.DataFrame, items: pl.DataFrame, lengths: np.ndarray, n_train: np.ndarray,
                  n_valid: np.ndarray) -> dict[str, Any]:
    U, N, I = len(lengths), items.height, inter.height
    tf = text_fields(items)
    if tf:
        has_text = pl.any_horizontal([pl.col(c).is_not_null() for c in tf])
        missing_text = int(items.select((~has_text).sum()).item())
    else:
        missing_text = N
    missing_image = int(items.select((pl.col("image_path").is_null() & pl.col("image_bytes").is_null()).sum()).item())
    return {"users": U, "items": N, "interactions": I, "avg_len": round(I / U, 4),
            "min_len": int(lengths.min()), "max_len": int(lengths.max()),
            "sparsity": round(1.0 - I / (U * N), 6), "text_fields": tf,
            "items_missing_text": missing_text, "items_missing_image": missing_image,
            "has_timestamps": bool(inter["timestamp"].null_count() < I),
            "split": summary(lengths, n_train, n_valid)}


def run(params: dict[str, Any], dataset: str | None = None, out_root: str | Path = "data/prepared",
        progress: bool = True) -> Path:
    """Prepare ``dataset`` (default ``base.dataset``) into ``<out_root>/<dataset>/``; returns that directory."""
    t0 = time.perf_counter()
    ds = dataset or get(params, "base.dataset")
    all_ds = get(params, "datasets")
    if not isinstance(all_ds, dict) or ds not in all_ds:
        raise ParamError("base.dataset", f"unknown dataset {ds!r} (datasets: {sorted(all_ds or {})})")
    key = f"datasets.{ds}"
    entry = all_ds[ds] or {}
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ParamError(f"{key}.{unknown[0]}", f"unknown key (known: {list(ENTRY_KEYS)})")
    fcfg = FilterConfig.from_params(entry.get("filter"), f"{key}.filter")
    scfg = SplitConfig.from_params(entry.get("split"), f"{key}.split")
    if scfg.keep_last is not None:  # loo_window: the window is part of filtering (before re-indexing)
        fcfg.keep_last = scfg.keep_last if fcfg.keep_last is None else min(fcfg.keep_last, scfg.keep_last)

    raw_inter, raw_items = load_raw(entry, key)
    t_read = time.perf_counter() - t0
    if progress:
        print(f"read {raw_inter.height:,} interactions, {raw_items.height:,} item records ({t_read:.1f}s)")
    filtered = filter_interactions(raw_inter, fcfg, f"{key}.filter", items=raw_items)
    inter = filtered.interactions
    n_users = int(inter["user"].max()) + 1
    flat, offsets = sequences_table(inter, n_users)
    lengths = np.diff(offsets)
    n_train, n_valid = split_lengths(lengths, scfg)
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, type=pa.int32()))
    split_tab = pl.DataFrame({"user": pl.Series(np.arange(n_users), dtype=pl.Int32),
                              "items": pl.Series("items", pl.from_arrow(lists)),
                              "n_train": pl.Series(n_train, dtype=pl.Int32),
                              "n_valid": pl.Series(n_valid, dtype=pl.Int32)})
    items = build_items(inter, raw_items)
    stats = dataset_stats(inter, items, lengths, n_train, n_valid)
    if stats["split"]["test_targets"] == 0:
        raise EmptyResultError(f"the {scfg.name} split leaves no test targets (sequences too short)")
    split_meta = {"name": scfg.name, **scfg.as_dict()}
    stats["split"] = {**split_meta, **stats["split"]}
    stats["filter"] = {**fcfg.as_dict(), "log": filtered.log}
    meta = {"dataset": ds, "format": entry.get("format"), "path": entry.get("path"), "split": split_meta,
            "filter": fcfg.as_dict()}
    out = write_prepared(Path(out_root) / ds, inter, items, split_tab, stats, meta)
    s = stats
    print(f"prepared {ds}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions "
          f"(avg len {s['avg_len']:.2f}), {scfg.name} split: {s['split']['train_targets']:,} train / "
          f"{s['split']['valid_targets']:,} valid / {s['split']['test_targets']:,} test targets "
          f"in {time.perf_counter() - t0:.1f}s -> {out} | wall {wall_seconds():.1f} s")
    return out
