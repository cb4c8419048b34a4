"""MovieLens releases: ML-100K (``u.data``, ``u.item``) and ML-1M (``ratings.dat``, ``movies.dat``; ``::``,
latin-1), each with optional plot text and a poster folder.

- ``path``: the release folder (files directly in it or in ``raw/``).
- ``plots``: a CSV with ``movie_id`` and ``overview`` (or ``plot``), e.g. the TMDB ``tmdb/items.csv`` of
  ``ml-100k-multimodal``; ``"auto"`` (default) uses ``<path>/tmdb/items.csv`` when present, ``null`` disables it.
  Duplicate rows of a movie are collapsed to its first non-empty plot.
- ``posters``: a folder of ``<movie_id>.jpg``; ``"auto"`` (default) uses ``<path>/posters`` when present.

Text fields: ``title`` (with year, as released), ``categories`` (genres, comma-separated), ``plot``.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from ...errors import DataError
from ._common import finish_interactions, finish_items, image_paths, parse_error, read_bytes

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]


def _locate(path: Path, name: str) -> Path:
    for cand in (path / name, path / "raw" / name):
        if cand.exists():
            return cand
    raise DataError(f"{name} not found (looked in the folder and its raw/)", path=path / name)


def _ratings(data: bytes, path: Path, sep: str) -> pl.DataFrame:
    """user, item, rating, timestamp columns of a ratings file whose fields are all integers."""
    if sep != "\t":
        data = data.replace(sep.encode(), b"\t")
    cols = ["user_orig", "item_orig", "rating", "timestamp"]
    try:
        df = pl.read_csv(io.BytesIO(data), separator="\t", has_header=False, infer_schema=False, quote_char=None,
                         truncate_ragged_lines=False)
    except pl.exceptions.PolarsError as e:
        raise parse_error(path, e, "malformed ratings file") from None
    if df.width != 4:
        raise DataError(f"expected 4 fields per line ({sep!r}-separated), found {df.width}", path=path, line=1)
    df.columns = cols
    num = df.select(pl.col(c).str.strip_chars().cast(pl.Int64, strict=False) for c in cols)
    bad = pl.any_horizontal(pl.col(c).is_null() for c in cols)
    bad_rows = num.with_row_index().filter(bad)
    if bad_rows.height:
        i = int(bad_rows["index"][0])
        raise DataError(f"malformed line (expected user{sep}item{sep}rating{sep}timestamp as integers): "
                        f"{sep.join(str(v) for v in df.row(i))!r}", path=path, line=i + 1)
    return num.with_columns(pl.col("user_orig").cast(pl.String), pl.col("item_orig").cast(pl.String),
                            pl.col("rating").cast(pl.Float32))


def _plots(path: Path, plots: str | None) -> pl.DataFrame | None:
    if plots is None:
        return None
    if plots == "auto":
        f = path / "tmdb" / "items.csv"
        if not f.exists():
            return None
    else:
        f = Path(plots)
    if not f.exists():
        raise DataError("plots file not found", path=f)
    try:
        df = pl.read_csv(f, infer_schema=False)
    except pl.exceptions.PolarsError as e:
        raise parse_error(f, e) from None
    col = next((c for c in ("overview", "plot", "description") if c in df.columns), None)
    if "movie_id" not in df.columns or col is None:
        raise DataError("needs columns movie_id and overview (or plot)", path=f, column="movie_id" if col else "overview")
    df = df.select(pl.col("movie_id").str.strip_chars().alias("item_orig"),
                   pl.col(col).str.strip_chars().alias("plot"))
    return (df.filter(pl.col("plot").str.len_chars() > 0)
              .unique("item_orig", keep="first", maintain_order=True))


def _finish(path: Path, ratings: pl.DataFrame, items: pl.DataFrame, plots: str | None, posters: str | None):
    p = _plots(path, plots)
    if p is not None:
        items = items.join(p, on="item_orig", how="left", maintain_order="left")
    folder = None
    if posters == "auto":
        folder = path / "posters" if (path / "posters").is_dir() else None
    elif posters is not None:
        folder = Path(posters)
    items = items.with_columns(image_paths(items["item_orig"], folder))
    return finish_interactions(ratings), finish_items(items)


def read_ml100k(path: Path, plots: str | None = "auto", posters: str | None = "auto"):
    udata = _locate(path, "u.data")
    ratings = _ratings(read_bytes(udata), udata, "\t")
    uitem = _locate(path, "u.item")
    rows = []
    for n, line in enumerate(read_bytes(uitem).decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) != 5 + len(ML100K_GENRES) or not f[0].strip().isdigit():
            raise DataError(f"expected 24 '|'-separated fields starting with the movie id, found {len(f)}",
                            path=uitem, line=n)
        genres = ", ".join(g for g, flag in zip(ML100K_GENRES, f[5:]) if flag.strip() == "1")
        rows.append((f[0].strip(), f[1], genres))
    if not rows:
        raise DataError("no movies in file", path=uitem)
    items = pl.DataFrame(rows, schema=["item_orig", "title", "categories"], orient="row")
    return _finish(path, ratings, items, plots, posters)


def read_ml1m(path: Path, plots: str | None = "auto", posters: str | None = "auto"):
    rfile = _locate(path, "ratings.dat")
    ratings = _ratings(read_bytes(rfile), rfile, "::")
    mfile = _locate(path, "movies.dat")
    rows = []
    for n, line in enumerate(read_bytes(mfile).decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        f = line.split("::")
        if len(f) != 3 or not f[0].strip().isdigit():
            raise DataError("expected MovieID::Title::Genres", path=mfile, line=n)
        rows.append((f[0].strip(), f[1], f[2].replace("|", ", ")))
    if not rows:
        raise DataError("no movies in file", path=mfile)
    items = pl.DataFrame(rows, schema=["item_orig", "title", "categories"], orient="row")
    return _finish(path, ratings, items, plots, posters)
