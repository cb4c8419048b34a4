"""Helpers every reader shares: the output contract, opening (gzipped) files, line-numbered errors.

Undecodable input is a :class:`DataError` naming the file and the 1-based line, never a ``UnicodeDecodeError``:
readers that decode themselves go through :func:`decode`; those that hand the file to polars turn its parse errors
into one through :func:`parse_error`, which finds the line polars does not name (``invalid utf-8 sequence``).
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path
from typing import Iterable

import polars as pl

from ...errors import DataError
from ...io import decode, undecodable  # noqa: F401  (re-exported for the readers)

INTERACTION_SCHEMA = {"user_orig": pl.String, "item_orig": pl.String, "timestamp": pl.Int64, "order": pl.Int64,
                      "rating": pl.Float32}


def find_file(root: Path, *names: str, required: bool = True) -> Path | None:
    """The first of ``names`` (glob patterns allowed; ``x.json`` also matches ``x.json.gz``) that exists in ``root``."""
    if root.is_file():
        return root
    for name in names:
        for cand in (name, name + ".gz"):
            hits = sorted(root.glob(cand))
            if hits:
                return hits[0]
    if required:
        raise DataError(f"none of {list(names)} found", path=root)
    return None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz."""
    if not path.exists():
        raise DataError("file not found", path=path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt .gz
        raise DataError(f"cannot read: {e}", path=path) from None


def open_binary(path: Path):
    """A binary file object, gunzipping on the fly when the name ends in .gz (streams; nothing held in memory)."""
    if not path.exists():
        raise DataError("file not found", path=path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def line_chunks(path: Path, chunk_bytes: int = 64 << 20) -> Iterable[tuple[int, bytes]]:
    """(1-based number of the chunk's first line, whole lines of about ``chunk_bytes``) over a (gzipped) file."""
    first = 1
    try:
        with open_binary(path) as f:
            while True:
                block = f.readlines(chunk_bytes)
                if not block:
                    return
                yield first, b"".join(block)
                first += len(block)
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt .gz
        raise DataError(f"cannot read: {e}", path=path) from None


def first_undecodable(path: Path) -> DataError | None:
    """The DataError for the first line of the (gzipped) file that is not UTF-8, streaming it chunk by chunk;
    None when the whole file decodes."""
    for first, chunk in line_chunks(path):
        err = undecodable(chunk, path, first)
        if err is not None:
            return err
    return None


_UTF8 = re.compile(r"utf-?8", re.IGNORECASE)


def parse_error(path: Path, e: Exception, what: str = "cannot parse") -> DataError:
    """The DataError for a file polars (or the OS) could not read: ``<what>: <first line of its message>``, or, when
    polars failed on undecodable bytes, the line and column of the first one (polars names neither)."""
    err = first_undecodable(path) if _UTF8.search(str(e)) and path.is_file() else None
    return err or DataError(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", path=path)


def lines(path: Path) -> Iterable[tuple[int, str]]:
    """(1-based line number, line without newline) for every non-blank line of a UTF-8 file."""
    text = decode(read_bytes(path), path)
    for n, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield n, line


def finish_interactions(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the reader contract, filling absent optional columns with nulls and ``order`` with the row number."""
    if "order" not in df.columns:
        df = df.with_row_index("order")
    cols = []
    for c, t in INTERACTION_SCHEMA.items():
        cols.append(pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c))
    return df.select(cols)


def finish_items(df: pl.DataFrame | None, text_cols: list[str] | None = None) -> pl.DataFrame:
    """Items table: ``item_orig`` + text columns (String, blank -> null) + ``image_path`` + ``image_bytes``."""
    if df is None:
        df = pl.DataFrame({"item_orig": pl.Series([], dtype=pl.String)})
    text_cols = text_cols if text_cols is not None else [c for c in df.columns
                                                         if c not in ("item_orig", "image_path", "image_bytes")]
    cols = [pl.col("item_orig").cast(pl.String)]
    for c in text_cols:
        s = pl.col(c).cast(pl.String).str.strip_chars()
        cols.append(pl.when(s.str.len_chars() > 0).then(s).otherwise(None).alias(c))
    cols.append(pl.col("image_path").cast(pl.String) if "image_path" in df.columns
                else pl.lit(None, dtype=pl.String).alias("image_path"))
    cols.append(pl.col("image_bytes").cast(pl.Binary) if "image_bytes" in df.columns
                else pl.lit(None, dtype=pl.Binary).alias("image_bytes"))
    return df.select(cols).unique("item_orig", keep="first", maintain_order=True)


def image_paths(ids: pl.Series, folder: Path | None, pattern: str = "{id}.jpg") -> pl.Series:
    """Absolute path of ``folder/pattern`` per id where that file exists, else null (one directory listing)."""
    if folder is None:
        return pl.Series("image_path", [None] * len(ids), dtype=pl.String)
    if not folder.is_dir():
        raise DataError("image folder not found", path=folder)
    folder = folder.resolve()
    rels = [pattern.format(id=i) for i in ids.to_list()]
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    return pl.Series("image_path", [str(folder / r) if r in present else None for r in rels], dtype=pl.String)


def check_columns(df: pl.DataFrame, needed: Iterable[str], path: Path) -> None:
    for c in needed:
        if c not in df.columns:
            raise missing_column(path, c, df.columns)


def missing_column(path: Path, column: str, have: list[str]) -> DataError:
    """The DataError for a header without ``column``; when the header line is not text (a binary file polars read
    anyway), the error says so instead."""
    try:
        with open_binary(path) as f:
            head = f.readline(1 << 20)
    except (OSError, EOFError, zlib.error):
        head = b""
    return undecodable(head, path) or DataError(f"missing column (have {have})", path=path, column=column)
