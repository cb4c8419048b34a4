"""UniSRec-style splits: ``<name>.train.inter`` / ``<name>.valid.inter`` / ``<name>.test.inter`` (RecBole atomic,
``user_id:token  item_id_list:token_seq  item_id:token``: a space-separated history and its target), ``<name>.text``
(``item_id:token  text:token_seq``) and optional ``<name>.item2index`` / ``<name>.user2index`` (original id -> index).

Each user's full sequence is rebuilt from the row with the longest history + target (test over valid over train),
so ``order`` is the position in that sequence; there are no timestamps. UniSRec truncates histories to 50 items, so
longer users come back as their last 51 items. ``item_orig`` is the original id when ``item2index`` is present.
The item text is stored as ``title`` (the field every text template starts with).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ...errors import DataError
from ._common import finish_interactions, finish_items, find_file, parse_error
from .recbole import read_atomic


def _index_map(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        df = pl.read_csv(path, separator="\t", has_header=False, infer_schema=False, quote_char=None)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise parse_error(path, e) from None
    if df.width != 2:
        raise DataError("expected '<original id>\\t<index>' lines", path=path, line=1)
    return dict(zip(df[:, 1].to_list(), df[:, 0].to_list()))


def read_unisrec(path: Path, name: str | None = None):
    if not path.is_dir():
        raise DataError("expected the dataset folder", path=path)
    name = name or path.name
    best: dict[str, list[str]] = {}
    for part in ("train", "valid", "test"):
        f = path / f"{name}.{part}.inter"
        if not f.exists():
            raise DataError("file not found", path=f)
        df, _ = read_atomic(f)
        for c in ("user_id", "item_id_list", "item_id"):
            if c not in df.columns:
                raise DataError("missing column", path=f, column=c)
        for n, (u, hist, tgt) in enumerate(df.select("user_id", "item_id_list", "item_id").iter_rows(), start=2):
            if u is None or tgt is None:
                raise DataError("empty user_id or item_id", path=f, line=n)
            seq = (hist or "").split() + [tgt]
            if len(seq) >= len(best.get(u, ())):
                best[u] = seq
    users = list(best)
    flat_u = [u for u in users for _ in best[u]]
    flat_i = [i for u in users for i in best[u]]
    i2o = _index_map(find_file(path, f"{name}.item2index", required=False))
    u2o = _index_map(find_file(path, f"{name}.user2index", required=False))
    inter = pl.DataFrame({"user_orig": flat_u, "item_orig": flat_i}, schema={"user_orig": pl.String,
                                                                             "item_orig": pl.String})
    text_file = find_file(path, f"{name}.text", required=False)
    if text_file is not None:
        t, _ = read_atomic(text_file)
        if "item_id" not in t.columns or "text" not in t.columns:
            raise DataError("expected columns item_id:token and text:token_seq", path=text_file)
        items = t.select(pl.col("item_id").alias("item_orig"), pl.col("text").alias("title"))
    else:
        items = inter.select("item_orig").unique(maintain_order=True)
    if i2o:
        inter = inter.with_columns(pl.col("item_orig").replace(i2o))
        items = items.with_columns(pl.col("item_orig").replace(i2o))
    if u2o:
        inter = inter.with_columns(pl.col("user_orig").replace(u2o))
    return finish_interactions(inter), finish_items(items)
