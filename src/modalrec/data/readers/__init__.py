"""Readers for the raw dataset formats: one module per format, each ``read(path, **options) -> (interactions, items)``.

Contract (``docs/contracts.md``): ``interactions`` has ``user_orig`` str, ``item_orig`` str, ``timestamp`` int64 or
null (unix seconds), ``order`` int64 (the row's position in the original file(s), the stable tie-break) and
``rating`` float32 or null; ``items`` has ``item_orig``, text fields (nullable str), ``image_path`` (absolute path or
null) and ``image_bytes`` (null unless the source embeds images). Readers never filter: the prepare stage does.
Malformed input, undecodable bytes included, is a :class:`~modalrec.errors.DataError` naming the file and, where it
can be known, the 1-based line (``_common``: :func:`~._common.decode`, :func:`~._common.parse_error`).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import polars as pl

from ...errors import DataError, ParamError

FORMATS = {
    "amazon2014": "amazon", "amazon2018": "amazon", "ml1m": "movielens", "ml100k": "movielens", "hm": "hm",
    "user_sequence": "user_sequence", "recbole": "recbole", "unisrec": "unisrec", "rechorus": "rechorus",
}


def reader(fmt: str):
    """The ``read`` function of a format (synthetic is handled by the prepare stage)."""
    if fmt not in FORMATS:
        raise ParamError("format", f"unknown dataset format {fmt!r} (known: {sorted(FORMATS) + ['synthetic']})")
    mod = importlib.import_module(f"{__name__}.{FORMATS[fmt]}")
    return getattr(mod, f"read_{fmt}")


def read(fmt: str, path: str | Path, options: dict[str, Any] | None = None,
         key: str = "datasets") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a dataset of format ``fmt`` at ``path``; unknown options raise a ParamError naming ``<key>.options.x``."""
    fn = reader(fmt)
    options = dict(options or {})
    params = inspect.signature(fn).parameters
    for k in options:
        if k not in params or k == "path":
            allowed = [p for p in params if p != "path"]
            raise ParamError(f"{key}.options.{k}", f"unknown option for format {fmt!r} (allowed: {allowed})")
    path = Path(path)
    if not path.exists():
        raise DataError("dataset path not found", path=path)
    return fn(path, **options)
