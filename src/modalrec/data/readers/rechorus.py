"""ReChorus release (e.g. LRD's ``data/Office/``): ``train.csv`` / ``dev.csv`` / ``test.csv`` (tab-separated,
``user_id``, ``item_id``, ``time``; dev/test add ``neg_items``, ignored), ``<Name>.item2index`` (ASIN -> item_id) and
``<Name>.text`` (``id`` = ASIN, ``text``).

The three files are concatenated in the order train, dev, test, so ``order`` keeps dev/test after the train items of
the same day. ``item_orig`` is the ASIN when ``item2index`` maps it (else the file's item id). The pre-joined text
(title + category + brand) is stored as ``title``, the field every text template starts with.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ...errors import DataError
from ._common import check_columns, finish_interactions, finish_items, find_file, parse_error


def _read_tsv(path: Path, columns: list[str], **kw) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None, **kw)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise parse_error(path, e) from None
    check_columns(df, columns, path)
    return df


def _ints(df: pl.DataFrame, col: str, path: Path, offset: int = 2) -> pl.Series:
    s = df[col].str.strip_chars().cast(pl.Int64, strict=False)
    bad = s.is_null()
    if bad.any():
        line = int(bad.arg_max()) + offset  # header is line 1
        raise DataError(f"not an integer: {df[col][line - offset]!r}", path=path, line=line, column=col)
    return s


def read_rechorus(path: Path, name: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    if not path.is_dir():
        raise DataError("expected a folder with train.csv, dev.csv, test.csv", path=path)
    parts = []
    for fname in ("train.csv", "dev.csv", "test.csv"):
        f = path / fname
        if not f.exists():
            raise DataError("file not found", path=f)
        df = _read_tsv(f, ["user_id", "item_id", "time"])
        parts.append(pl.DataFrame({"user_orig": _ints(df, "user_id", f).cast(pl.String),
                                   "item_id": _ints(df, "item_id", f), "timestamp": _ints(df, "time", f)}))
    inter = pl.concat(parts).with_row_index("order")
    pattern = f"{name}." if name else "*."
    i2i = find_file(path, pattern + "item2index", required=False)
    if i2i is not None:
        m = _read_tsv(i2i, [], has_header=False, new_columns=["asin", "item_id"])
        m = m.with_columns(_ints(m, "item_id", i2i, offset=1))
        inter = inter.join(m, on="item_id", how="left", maintain_order="left")
        inter = inter.with_columns(pl.coalesce("asin", pl.col("item_id").cast(pl.String)).alias("item_orig"))
    else:
        inter = inter.with_columns(pl.col("item_id").cast(pl.String).alias("item_orig"))
    text = find_file(path, pattern + "text", required=False)
    if text is not None:
        t = _read_tsv(text, ["id", "text"])
        items = t.select(pl.col("id").alias("item_orig"), pl.col("text").alias("title"))
    else:
        items = inter.select("item_orig").unique(maintain_order=True)
    return finish_interactions(inter), finish_items(items)
