"""From raw interactions to filtered, chronologically ordered, re-indexed sequences.

Steps, in this order (each optional, all configured by :class:`FilterConfig` from ``datasets.<name>.filter``):

0. ``require``: keep only interactions with items that have ``text`` and/or an ``image`` in the item table (ODMT
   keeps only items present in its text file and image LMDB).
1. ``min_rating``: drop interactions rated below the threshold (KDSR uses 0, i.e. nothing).
2. Chronological order per user: sort by (user, timestamp, order). ``order`` is the row's position in the original
   file, so ties (Amazon 2014 timestamps have day granularity) are broken stably by file order; interactions without
   a timestamp sort after timestamped ones of the same user, by file order.
3. ``duplicates``: ``keep`` (every interaction), ``consecutive`` (drop an interaction whose item equals the user's
   previous one) or ``first`` (keep only a user's first interaction with each item).
4. Iterative core-k: every round counts users and items on the same snapshot, removes users with fewer than
   ``user_core`` and items with fewer than ``item_core`` interactions, and repeats until nothing changes (KDSR's
   ``basic_filter``). 0 or 1 disables a side.
5. ODMT's user-only rule: drop users with fewer than ``min_len`` interactions, then keep each user's last
   ``keep_last`` interactions (no item filter; items left without interactions disappear at re-indexing).
6. Re-index: users 0..U-1 and items 1..N (0 = padding) in order of **first appearance in the original file**
   (``reindex: first_seen``, the default: for ``user_sequence.txt`` this keeps the file's user order) or by sorted
   original id (``reindex: sorted``). Both are deterministic functions of the input.

Everything runs on integer codes in numpy (``np.bincount`` per core-k round), so a million interactions filter in
well under a second; memory is a few arrays of length #interactions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import EmptyResultError, ParamError
from ..params import dataclass_from

DUPLICATE_POLICIES = ("keep", "consecutive", "first")
REINDEX = ("first_seen", "sorted")
REQUIRED = ("user_orig", "item_orig", "timestamp", "order", "rating")


@dataclass
class FilterConfig:
    user_core: int = 0
    item_core: int = 0
    min_rating: float | None = None
    duplicates: str = "keep"
    min_len: int = 0
    keep_last: int | None = None
    reindex: str = "first_seen"
    require: list[str] = field(default_factory=list)  # subset of ["text", "image"]

    @classmethod
    def from_params(cls, d: dict[str, Any] | None, key: str = "filter") -> "FilterConfig":
        cfg = dataclass_from(cls, d, key, "filter option")
        for name in ("user_core", "item_core", "min_len"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ParamError(f"{key}.{name}", f"must be an integer >= 0, got {v!r}")
        if cfg.keep_last is not None and (not isinstance(cfg.keep_last, int) or cfg.keep_last < 1):
            raise ParamError(f"{key}.keep_last", f"must be null or an integer >= 1, got {cfg.keep_last!r}")
        if cfg.min_rating is not None and not isinstance(cfg.min_rating, (int, float)):
            raise ParamError(f"{key}.min_rating", f"must be null or a number, got {cfg.min_rating!r}")
        if cfg.duplicates not in DUPLICATE_POLICIES:
            raise ParamError(f"{key}.duplicates", f"must be one of {DUPLICATE_POLICIES}, got {cfg.duplicates!r}")
        if not isinstance(cfg.require, list) or any(r not in ("text", "image") for r in cfg.require):
            raise ParamError(f"{key}.require", f"must be a list drawn from ['text', 'image'], got {cfg.require!r}")
        if cfg.reindex not in REINDEX:
            raise ParamError(f"{key}.reindex", f"must be one of {REINDEX}, got {cfg.reindex!r}")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def core_k(users: np.ndarray, items: np.ndarray, user_core: int, item_core: int,
           mask: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Iterative core-k on integer codes; returns (keep mask, rounds). Each round counts from the same snapshot."""
    keep = np.ones(len(users), bool) if mask is None else mask.copy()
    nu = int(users.max()) + 1 if len(users) else 0
    ni = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        uc = np.bincount(users[keep], minlength=nu)
        ic = np.bincount(items[keep], minlength=ni)
        bad = keep & ((uc[users] < user_core) | (ic[items] < item_core))
        if not bad.any():
            return keep, rounds
        keep &= ~bad


def _codes(s: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Integer code of each value (0.. in order of first appearance; a hash join, not a string sort) and the
    distinct values in code order."""
    s = s.cast(pl.String).rename("k")
    uniq = s.unique(maintain_order=True)
    codes = (s.to_frame().join(uniq.to_frame().with_row_index("code"), on="k", how="left", maintain_order="left")
             ["code"].cast(pl.Int64).to_numpy())
    return codes, uniq


def _sorted_rank(values: pl.Series) -> np.ndarray:
    """Rank of each value among ``values`` by string order (for ``reindex: sorted``)."""
    rank = np.empty(len(values), np.int64)
    rank[values.arg_sort().to_numpy()] = np.arange(len(values))
    return rank


def _first_seen_rank(codes: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """New index (0-based) of each code by the smallest file order among its rows."""
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, order)
    rank = np.empty(n, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n)
    return rank


@dataclass
class Filtered:
    """Surviving interactions (contract columns, sorted by user, time, order) and a per-step log."""

    interactions: pl.DataFrame
    log: dict[str, Any]


def items_with(items: pl.DataFrame, require: list[str]) -> pl.Series:
    """``item_orig`` of the items that have every required modality (text: any non-null text field)."""
    cond = pl.lit(True)
    if "text" in require:
        tf = [c for c, t in items.schema.items()
              if c not in ("item_orig", "image_path", "image_bytes") and t == pl.String]
        cond = cond & (pl.any_horizontal([pl.col(c).is_not_null() for c in tf]) if tf else pl.lit(False))
    if "image" in require:
        img = [pl.col(c).is_not_null() for c in ("image_path", "image_bytes") if c in items.columns]
        cond = cond & (pl.any_horizontal(img) if img else pl.lit(False))
    return items.filter(cond)["item_orig"]


def filter_interactions(df: pl.DataFrame, cfg: FilterConfig, key: str = "filter",
                        items: pl.DataFrame | None = None) -> Filtered:
    """Apply the steps of the module docstring; raises EmptyResultError when nothing survives.

    ``items`` (the reader's item table) is needed only for ``require``."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ParamError(key, f"reader output lacks columns {missing}")
    log: dict[str, Any] = {"input": df.height}
    if df.height == 0:
        raise EmptyResultError("the reader returned no interactions")
    if df["user_orig"].null_count() or df["item_orig"].null_count():
        raise ParamError(key, "the reader returned interactions with a null user or item id")
    u, u_vals = _codes(df["user_orig"])
    it, i_vals = _codes(df["item_orig"])
    order = df["order"].cast(pl.Int64).to_numpy()
    ts_s = df["timestamp"].cast(pl.Int64)
    has_ts = ts_s.is_not_null().to_numpy()
    ts = ts_s.fill_null(np.iinfo(np.int64).max).to_numpy()
    keep = np.ones(df.height, bool)

    if cfg.require:
        if items is None:
            raise ParamError(f"{key}.require", "needs the item table")
        keep &= df["item_orig"].cast(pl.String).is_in(items_with(items, cfg.require).implode()).to_numpy()
        log["after_require"] = int(keep.sum())

    if cfg.min_rating is not None:
        r = df["rating"].cast(pl.Float64)
        if r.null_count() == df.height:
            raise ParamError(f"{key}.min_rating", "is set but this dataset has no ratings")
        keep &= (r >= cfg.min_rating).fill_null(True).to_numpy()
        log["after_min_rating"] = int(keep.sum())

    perm = np.lexsort((order, ts, u))  # chronological per user, ties by file order
    perm = perm[keep[perm]]
    u_s, i_s = u[perm], it[perm]

    if cfg.duplicates == "consecutive":
        dup = np.zeros(len(perm), bool)
        dup[1:] = (u_s[1:] == u_s[:-1]) & (i_s[1:] == i_s[:-1])
        perm, u_s, i_s = perm[~dup], u_s[~dup], i_s[~dup]
    elif cfg.duplicates == "first":
        pair = u_s.astype(np.int64) * (int(it.max()) + 1) + i_s
        _, first_idx = np.unique(pair, return_index=True)
        sel = np.sort(first_idx)
        perm, u_s, i_s = perm[sel], u_s[sel], i_s[sel]
    if cfg.duplicates != "keep":
        log["after_duplicates"] = len(perm)

    if cfg.user_core > 1 or cfg.item_core > 1:
        k, rounds = core_k(u_s, i_s, cfg.user_core, cfg.item_core)
        perm, u_s, i_s = perm[k], u_s[k], i_s[k]
        log["after_core"] = len(perm)
        log["core_rounds"] = rounds

    if cfg.min_len > 1 or cfg.keep_last is not None:
        counts = np.bincount(u_s, minlength=int(u.max()) + 1)
        sel = counts[u_s] >= cfg.min_len
        if cfg.keep_last is not None:
            # position from the end within the user's run (rows are grouped by user)
            starts = np.r_[0, np.flatnonzero(u_s[1:] != u_s[:-1]) + 1] if len(u_s) else np.zeros(0, np.int64)
            ends = np.r_[starts[1:], len(u_s)]
            run_end = np.repeat(ends, ends - starts)
            sel &= (run_end - np.arange(len(u_s))) <= cfg.keep_last
        perm, u_s, i_s = perm[sel], u_s[sel], i_s[sel]
        log["after_min_len_window"] = len(perm)

    if len(perm) == 0:
        raise EmptyResultError(f"no interaction survives filtering ({cfg.as_dict()}); log: {log}")

    # re-index the survivors
    uu, u_new = np.unique(u_s, return_inverse=True)
    ii, i_new = np.unique(i_s, return_inverse=True)
    o_s = order[perm]
    if cfg.reindex == "first_seen":
        u_rank = _first_seen_rank(u_new, o_s, len(uu))
        i_rank = _first_seen_rank(i_new, o_s, len(ii))
    else:
        u_rank, i_rank = _sorted_rank(u_vals.gather(uu)), _sorted_rank(i_vals.gather(ii))
    user = u_rank[u_new].astype(np.int32)
    item = (i_rank[i_new] + 1).astype(np.int32)
    # final order: by new user id, keeping the chronological order within each user
    fin = np.lexsort((np.arange(len(perm)), user))
    rows = perm[fin]
    out = pl.DataFrame({
        "user": pl.Series(user[fin], dtype=pl.Int32),
        "item": pl.Series(item[fin], dtype=pl.Int32),
        "timestamp": pl.Series(np.where(has_ts[rows], ts[rows], 0), dtype=pl.Int64),
        "order": pl.Series(order[rows], dtype=pl.Int64),
        "rating": df["rating"].cast(pl.Float32).gather(rows),
        "user_orig": df["user_orig"].cast(pl.String).gather(rows),
        "item_orig": df["item_orig"].cast(pl.String).gather(rows),
    })
    ts_null = pl.Series(~has_ts[rows])
    if ts_null.any():
        out = out.with_columns(pl.when(ts_null).then(None).otherwise(pl.col("timestamp")).alias("timestamp"))
    log.update(users=len(uu), items=len(ii), interactions=len(perm))
    return Filtered(out, log)


def sequences_table(interactions: pl.DataFrame, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, offsets)``: all users' item sequences concatenated (int32) and the [U+1] start of each user, from
    filtered interactions sorted by user (the order of ``filter_interactions``)."""
    user = interactions["user"].to_numpy()
    flat = interactions["item"].to_numpy().astype(np.int32)
    counts = np.bincount(user, minlength=n_users)
    return flat, np.r_[0, np.cumsum(counts)].astype(np.int64)
