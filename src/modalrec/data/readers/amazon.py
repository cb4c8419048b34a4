"""Amazon review data releases (McAuley lab).

- 2014 (``amazon2014``): ``reviews_<Cat>_5.json[.gz]`` (JSON lines: ``reviewerID``, ``asin``, ``overall``,
  ``unixReviewTime``) and ``meta_<Cat>.json[.gz]`` whose lines are **Python literals** (single quotes), parsed with
  ``ast.literal_eval``: ``asin``, ``title``, ``brand``, ``categories`` (list of category paths), ``description``.
- 2018 (``amazon2018``): ``<Cat>_5.json[.gz]`` and ``meta_<Cat>.json[.gz]``, both JSON lines; meta has ``category``
  (list) and ``description`` (list of strings).

Options: ``category`` (the ``<Cat>`` of the file names; default: the only matching file), ``images`` (a folder of
``<asin>.jpg``, optional), ``meta`` (false to skip the metadata file). Only the metadata lines of reviewed items are
parsed (a regex finds the asin first), which makes the multi-GB meta files tractable.
Reviews must be UTF-8 (an undecodable byte is an error naming its line); in metadata, undecodable bytes of a line
that still parses are replaced by U+FFFD, and a line that does not parse because of them is reported as such.
Text fields: ``title``, ``brand``, ``categories`` (paths joined with " > ", paths separated by "; "),
``description``.
"""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from ...errors import DataError
from ._common import decode, find_file, finish_interactions, finish_items, image_paths, line_chunks, undecodable

REVIEW_SCHEMA = {"reviewerID": pl.String, "asin": pl.String, "overall": pl.Float64, "unixReviewTime": pl.Int64}
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def _reviews(path: Path) -> pl.DataFrame:
    """The four needed fields, parsed by polars in ~64 MB chunks of lines (reviewText etc. never held at once)."""
    parts = []
    for first, chunk in line_chunks(path):
        try:
            df = pl.read_ndjson(io.BytesIO(chunk), schema=REVIEW_SCHEMA, ignore_errors=False)
        except pl.exceptions.PolarsError:
            df = None
        if df is None or df["reviewerID"].null_count() or df["asin"].null_count():
            _find_bad_review(chunk, path, first)
        parts.append(df)
    if not parts:
        raise DataError("no reviews in file", path=path)
    df = pl.concat(parts)
    return df.select(pl.col("reviewerID").alias("user_orig"), pl.col("asin").alias("item_orig"),
                     pl.col("unixReviewTime").alias("timestamp"), pl.col("overall").alias("rating"))


def _find_bad_review(data: bytes, path: Path, first: int = 1) -> None:
    """Locate the first line that is not UTF-8 text, not a JSON object with reviewerID and asin, or has a value
    polars cannot read as its REVIEW_SCHEMA type (``"overall": "five"``); always raises."""
    n = first
    rows: list[tuple[int, bytes]] = []
    for n, raw in enumerate(data.split(b"\n"), start=first):
        line = decode(raw, path, n)
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg}", path=path, line=n) from None
        for c in ("reviewerID", "asin"):
            if not isinstance(rec, dict) or not isinstance(rec.get(c), str):
                raise DataError(f"review lacks {c!r}", path=path, line=n, column=c)
        rows.append((n, raw))
    # every line is a review: bisect for the first one polars rejects (with the schema given, lines parse alone)
    lo, hi = 0, len(rows)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _polars_error(b"\n".join(r for _, r in rows[lo:mid])) is None:
            lo = mid
        else:
            hi = mid
    msg = _polars_error(rows[lo][1]) if rows else None
    if msg is not None:
        raise DataError(f"cannot parse: {msg}", path=path, line=rows[lo][0])
    raise DataError("cannot parse the reviews file", path=path, line=n)


def _polars_error(data: bytes) -> str | None:
    """The first line of polars' error reading ``data`` as reviews, None when it reads."""
    try:
        pl.read_ndjson(io.BytesIO(data), schema=REVIEW_SCHEMA, ignore_errors=False)
    except pl.exceptions.PolarsError as e:
        return (str(e).splitlines() or [type(e).__name__])[0]
    return None


def _text(v: Any, sep: str = " ") -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        parts = [_text(x, sep) for x in v]
        s = sep.join(p for p in parts if p)
        return s or None
    s = str(v).strip()
    return s or None


def _categories(v: Any) -> str | None:
    """2014: list of category paths (lists); 2018: one flat list."""
    if not v:
        return None
    if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
        return _text([" > ".join(str(c) for c in path if c) for path in v], "; ")
    return _text(v, " > ")


def _stream_lines(path: Path):
    """(line number, bytes) of the non-blank lines, streamed (meta files of big categories are several GB)."""
    for first, chunk in line_chunks(path):
        for n, raw in enumerate(chunk.splitlines(), start=first):
            if raw.strip():
                yield n, raw


def _meta(path: Path, wanted: set[str], literal: bool | None) -> pl.DataFrame:
    """Metadata of the ``wanted`` asins; ``literal`` None = JSON, falling back to a Python literal per line."""
    rows = []
    for n, raw in _stream_lines(path):
        line = raw.decode("utf-8", errors="replace")
        m = _ASIN.search(line)
        if m is None:
            raise (undecodable(raw, path, n)
                   or DataError("metadata line without an asin", path=path, line=n, column="asin"))
        if m.group(1) not in wanted:
            continue
        try:
            if literal is None:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = ast.literal_eval(line)
            else:
                rec = ast.literal_eval(line) if literal else json.loads(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            kind = "Python literal" if literal or literal is None else "JSON"
            raise (undecodable(raw, path, n)
                   or DataError(f"malformed {kind}: {e}".splitlines()[0], path=path, line=n)) from None
        if not isinstance(rec, dict):
            raise DataError("metadata line is not a record", path=path, line=n)
        if "asin" not in rec:  # the regex matched an asin inside a nested field
            raise DataError("metadata record without an asin", path=path, line=n, column="asin")
        rows.append((rec["asin"], _text(rec.get("title")), _text(rec.get("brand")),
                     _categories(rec.get("categories", rec.get("category"))), _text(rec.get("description"))))
    return pl.DataFrame(rows, schema={"item_orig": pl.String, "title": pl.String, "brand": pl.String,
                                      "categories": pl.String, "description": pl.String}, orient="row")


def _read(path: Path, year: int, category: str | None, images: str | None, meta: bool):
    cat = category or "*"
    rev_name = f"reviews_{cat}_5.json" if year == 2014 else f"{cat}_5.json"
    rev = find_file(path, rev_name)
    inter = _reviews(rev).with_row_index("order")
    items = pl.DataFrame({"item_orig": inter["item_orig"].unique(maintain_order=True)})
    if meta:
        if category is None:  # the <Cat> of the reviews file found
            m = re.match(r"(?:reviews_)?(.+)_5\.json", rev.name)
            cat = m.group(1) if m else "*"
        mfile = find_file(path if path.is_dir() else path.parent, f"meta_{cat}.json", required=False)
        if mfile is not None:
            md = _meta(mfile, set(items["item_orig"].to_list()), literal=year == 2014)
            items = items.join(md.unique("item_orig", keep="first"), on="item_orig", how="left",
                               maintain_order="left")
    items = items.with_columns(image_paths(items["item_orig"], Path(images) if images else None))
    return finish_interactions(inter), finish_items(items)


def read_amazon2014(path: Path, category: str | None = None, images: str | None = None, meta: bool = True):
    return _read(path, 2014, category, images, meta)


def read_amazon2018(path: Path, category: str | None = None, images: str | None = None, meta: bool = True):
    return _read(path, 2018, category, images, meta)
