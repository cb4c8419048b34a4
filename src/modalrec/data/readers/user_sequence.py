"""Chronological ``user_sequence.txt`` (P5 / GRAM release of Amazon 2014 5-core): ``<user> <item_1> <item_2> ...``.

No timestamps, ratings, text or images: ``order`` is the running position over the whole file, so each user's items
keep their file order. ``path`` is the file or a folder holding ``user_sequence.txt``.

Options: ``meta`` (an Amazon ``meta_<Cat>.json[.gz]``, 2014 Python literals or 2018 JSON, to join ``title``,
``brand``, ``categories``, ``description`` by asin), ``images`` (a folder of ``<item>.jpg``), ``sep`` (default:
whitespace).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ...errors import DataError
from ._common import decode, find_file, finish_interactions, finish_items, image_paths, read_bytes


def read_user_sequence(path: Path, sep: str | None = None, meta: str | None = None,
                       images: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    path = find_file(path, "user_sequence.txt")
    text = decode(read_bytes(path), path) if path else ""  # undecodable bytes: a DataError naming the line
    users: list[str] = []
    counts: list[int] = []
    items: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tok = line.split(sep)
        if len(tok) < 2:
            raise DataError("expected '<user> <item> [<item> ...]'", path=path, line=n)
        users.append(tok[0])
        counts.append(len(tok) - 1)
        items.extend(tok[1:])
    if not users:
        raise DataError("no sequences in file", path=path)
    inter = pl.DataFrame({"user_orig": pl.Series(np.repeat(np.asarray(users, dtype=object), counts).tolist(),
                                                 dtype=pl.String),
                          "item_orig": pl.Series(items, dtype=pl.String)})
    item_tab = pl.DataFrame({"item_orig": inter["item_orig"].unique(maintain_order=True)})
    if meta is not None:
        from .amazon import _meta

        md = _meta(Path(meta), set(item_tab["item_orig"].to_list()), literal=None)
        item_tab = item_tab.join(md.unique("item_orig", keep="first"), on="item_orig", how="left",
                                 maintain_order="left")
    item_tab = item_tab.with_columns(image_paths(item_tab["item_orig"], Path(images) if images else None))
    return finish_interactions(inter), finish_items(item_tab)
