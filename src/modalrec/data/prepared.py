"""The prepared dataset on disk (``data/prepared/<ds>/``) and its loading API.

Layout (binding, see ``docs/contracts.md``): ``interactions.parquet``, ``items.parquet``, ``split.parquet`` and
``stats.json``. :func:`write_prepared` builds the whole directory in a temporary sibling and renames it into place,
so a failed prepare never leaves a half-written dataset that a later stage could mistake for a good one.

:func:`load_prepared` returns a :class:`Prepared`: the per-user sequences as ``np.int32`` arrays (views into one flat
array, so loading Beauty's 22k users takes milliseconds), the split boundaries, the item table and helpers for the
train / valid / test target positions. Positions follow the contract: the target at position ``p`` of user ``u`` is
``sequences[u][p]`` and its (teacher-forced) history is ``sequences[u][:p]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from ..io import atomic_dir, read_parquet_meta, write_json, write_parquet

INTERACTION_COLUMNS = {"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64, "order": pl.Int64,
                       "rating": pl.Float32, "user_orig": pl.String, "item_orig": pl.String}
NON_TEXT_ITEM_COLUMNS = ("item", "item_orig", "image_path", "image_bytes")
PARTS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------------------------------
# Writing

def text_fields(items: pl.DataFrame) -> list[str]:
    """The text columns of an item table (every string column except ids and image paths)."""
    return [c for c, t in items.schema.items() if c not in NON_TEXT_ITEM_COLUMNS and t == pl.String]


def _check_split_table(split: pl.DataFrame, n_items: int) -> None:
    for c in ("user", "items", "n_train", "n_valid"):
        if c not in split.columns:
            raise DataError(f"split table lacks column {c!r}")
    lens = split["items"].list.len().to_numpy()
    nt, nv = split["n_train"].to_numpy(), split["n_valid"].to_numpy()
    if (nt < 1).any() or (nv < 0).any() or (nt + nv > lens).any():
        raise DataError("split table has n_train < 1, n_valid < 0 or n_train + n_valid > len")
    if not np.array_equal(split["user"].to_numpy(), np.arange(split.height)):
        raise DataError("split table users must be 0..U-1 in order")


def write_prepared(out_dir: str | Path, interactions: pl.DataFrame, items: pl.DataFrame, split_table: pl.DataFrame,
                   stats: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write a prepared dataset into ``out_dir`` atomically (whole directory).

    ``interactions``: the contract columns (extra columns are dropped); ``items``: ``item`` 1..N sorted plus
    ``item_orig``, text fields, ``image_path``, ``image_bytes``; ``split_table``: ``user``, ``items`` (list),
    ``n_train``, ``n_valid``; ``meta``: ``{"dataset": ..., "filter": {...}, "split": {"name": ..., ...}}``.
    """
    out_dir = Path(out_dir)
    n_items = items.height
    if not np.array_equal(items["item"].to_numpy(), np.arange(1, n_items + 1)):
        raise DataError("items table must hold item ids 1..N in order")
    _check_split_table(split_table, n_items)
    inter = interactions.select([pl.col(c).cast(t) for c, t in INTERACTION_COLUMNS.items()])
    for c in ("image_path", "image_bytes"):
        if c not in items.columns:
            items = items.with_columns(pl.lit(None, dtype=pl.String if c == "image_path" else pl.Binary).alias(c))
    items = items.with_columns(pl.col("item").cast(pl.Int32), pl.col("item_orig").cast(pl.String))
    split_table = split_table.select(pl.col("user").cast(pl.Int32), pl.col("items").cast(pl.List(pl.Int32)),
                                     pl.col("n_train").cast(pl.Int32), pl.col("n_valid").cast(pl.Int32))

    with atomic_dir(out_dir) as tmp:
        write_parquet(tmp / "interactions.parquet", inter.to_arrow(), meta=meta)
        write_parquet(tmp / "items.parquet", items.to_arrow(),
                      meta={**meta, "text_fields": text_fields(items), "n_items": n_items})
        write_parquet(tmp / "split.parquet", split_table.to_arrow(), meta=meta)
        write_json(tmp / "stats.json", stats)
    return out_dir


# --------------------------------------------------------------------------------------------------------------------
# Loading

@dataclass
class Prepared:
    """A loaded prepared dataset. ``sequences[u]`` is user u's chronological item sequence (np.int32, items 1..N)."""

    n_items: int
    n_users: int
    sequences: list[np.ndarray]
    n_train: np.ndarray  # [U] int32
    n_valid: np.ndarray  # [U] int32
    items: pl.DataFrame
    split_meta: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # all sequences concatenated
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # [U+1] start of each user in flat
    path: Path | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_test(self) -> np.ndarray:
        return (self.lengths - self.n_train - self.n_valid).astype(np.int32)

    def train_item_counts(self) -> np.ndarray:
        """Training popularity ``[N+1]`` (int64): occurrences of each item in the train parts ``items[:n_train]``."""
        nt = self.n_train.astype(np.int64)
        idx = _ranges(self.offsets[:-1], nt)
        return np.bincount(self.flat[idx], minlength=self.n_items + 1).astype(np.int64)

    def instances(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """``(users, positions)`` of every target of ``part``, in (user, position) order.

        train: positions 1..n_train-1; valid: n_train..n_train+n_valid-1; test: n_train+n_valid..len-1.
        """
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        nt, nv = self.n_train.astype(np.int64), self.n_valid.astype(np.int64)
        lo, hi = {"train": (np.minimum(nt, 1), nt), "valid": (nt, nt + nv), "test": (nt + nv, self.lengths)}[part]
        counts = np.maximum(hi - lo, 0)
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        pos = _ranges(lo, counts)
        return users, pos

    def targets(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The target item of each (user, position)."""
        return self.flat[self.offsets[np.asarray(users)] + np.asarray(positions)]

    def history(self, user: int, pos: int, max_len: int | None = None) -> np.ndarray:
        """``items[:pos]`` of ``user``, keeping the last ``max_len`` items (teacher forcing)."""
        seq = self.sequences[user]
        start = 0 if max_len is None else max(0, pos - max_len)
        return seq[start:pos]

    def histories(self, users: np.ndarray, positions: np.ndarray, max_len: int) -> np.ndarray:
        """Left-padded ``[I, max_len]`` int64 matrix of truncated histories (0 = padding), vectorised."""
        users, positions = np.asarray(users, np.int64), np.asarray(positions, np.int64)
        out = np.zeros((len(users), max_len), dtype=np.int64)
        if len(users) == 0:
            return out
        hl = np.minimum(positions, max_len)
        cols = np.arange(max_len)[None, :]
        valid = cols >= (max_len - hl)[:, None]
        src = (self.offsets[users] + positions)[:, None] - max_len + cols
        out[valid] = self.flat[src[valid]]
        return out


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each pair, vectorised."""
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    return np.repeat(starts, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))


def load_prepared(path: str | Path) -> Prepared:
    """Load ``data/prepared/<ds>/`` (split, items, stats); raises DataError naming what is missing or broken."""
    path = Path(path)
    split_path, items_path = path / "split.parquet", path / "items.parquet"
    for p in (split_path, items_path):
        if not p.exists():
            raise DataError("prepared dataset file not found (run the prepare stage first)", path=p)
    try:
        tab = pq.read_table(split_path)
        meta = read_parquet_meta(split_path)
        items = pl.read_parquet(items_path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise DataError(f"cannot read the prepared dataset: {e}", path=path) from None
    for c in ("user", "items", "n_train", "n_valid"):
        if c not in tab.column_names:
            raise DataError("missing column", path=split_path, column=c)
    lists = tab.column("items").combine_chunks()
    if isinstance(lists, pa.ChunkedArray):  # empty table
        lists = pa.array([], type=pa.list_(pa.int32()))
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    flat = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
    sequences = np.split(flat, offsets[1:-1]) if len(offsets) > 1 else []
    n_train = tab.column("n_train").to_numpy().astype(np.int32)
    n_valid = tab.column("n_valid").to_numpy().astype(np.int32)
    stats_path = path / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return Prepared(n_items=items.height, n_users=tab.num_rows, sequences=sequences, n_train=n_train,
                    n_valid=n_valid, items=items, split_meta=meta, stats=stats, flat=flat, offsets=offsets,
                    path=path)
