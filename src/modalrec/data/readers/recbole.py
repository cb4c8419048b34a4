"""RecBole atomic files: ``<name>.inter`` and optional ``<name>.item``, tab-separated, typed headers
(``user_id:token``, ``item_id:token``, ``rating:float``, ``timestamp:float``, ``title:token_seq``, ...).

``path`` is the folder (``<name>`` = the folder's name unless the ``name`` option says otherwise, or the only
``*.inter`` file). Every ``token`` / ``token_seq`` column of ``.item`` other than ``item_id`` becomes a text field
under its own name (``title``, ``categories``, ``brand``, ...).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ...errors import DataError
from ._common import finish_interactions, finish_items, find_file, image_paths, parse_error


def read_atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """An atomic file with its type suffixes stripped from the column names -> (frame, {column: type})."""
    try:
        df = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise parse_error(path, e) from None
    types = {}
    for c in df.columns:
        if ":" not in c:
            raise DataError(f"header field {c!r} lacks its ':type' suffix (e.g. user_id:token)", path=path, line=1)
        name, t = c.split(":", 1)
        types[name] = t
    df.columns = list(types)
    return df, types


def _numeric(df: pl.DataFrame, col: str, path: Path) -> pl.Series:
    s = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    bad = s.is_null() & df[col].is_not_null()
    if bad.any():
        i = int(bad.arg_max())
        raise DataError(f"not a number: {df[col][i]!r}", path=path, line=i + 2, column=col)
    return s


def read_recbole(path: Path, name: str | None = None, images: str | None = None):
    if path.is_dir():
        inter_file = find_file(path, f"{name or path.name}.inter", "*.inter")
    else:
        inter_file = path
    stem = inter_file.name[: -len(".inter")]
    df, types = read_atomic(inter_file)
    for c in ("user_id", "item_id"):
        if c not in df.columns:
            raise DataError("missing column", path=inter_file, column=f"{c}:token")
    nulls = df["user_id"].is_null() | df["item_id"].is_null()
    if nulls.any():
        raise DataError("empty user_id or item_id", path=inter_file, line=int(nulls.arg_max()) + 2)
    out = pl.DataFrame({"user_orig": df["user_id"], "item_orig": df["item_id"]})
    if "timestamp" in df.columns:
        out = out.with_columns(_numeric(df, "timestamp", inter_file).round().cast(pl.Int64).alias("timestamp"))
    if "rating" in df.columns:
        out = out.with_columns(_numeric(df, "rating", inter_file).alias("rating"))
    item_file = inter_file.with_name(stem + ".item")
    if item_file.exists():
        it, itypes = read_atomic(item_file)
        if "item_id" not in it.columns:
            raise DataError("missing column", path=item_file, column="item_id:token")
        text = [c for c, t in itypes.items() if c != "item_id" and t in ("token", "token_seq")]
        items = it.select(pl.col("item_id").alias("item_orig"), *text)
    else:
        items = out.select("item_orig").unique(maintain_order=True)
    items = items.with_columns(image_paths(items["item_orig"], Path(images) if images else None))
    return finish_interactions(out), finish_items(items)
