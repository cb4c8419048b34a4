"""H&M Personalized Fashion Recommendations (Kaggle): ``transactions_train.csv`` (``t_dat``, ``customer_id``,
``article_id``, ...), ``articles.csv`` and ``images/0xx/0xxxxxxxxx.jpg``.

Article ids are zero-padded to 10 digits (the CSV drops the leading 0; the image names keep it). ``timestamp`` is the
purchase day (unix seconds at 00:00 UTC); same-day purchases keep file order through ``order``. The 31M-row file is
scanned lazily with only the three needed columns. Options: ``images`` (``"auto"`` = ``<path>/images`` when present,
null disables), ``since`` (``YYYY-MM-DD``: keep transactions on or after this day, e.g. the last weeks as ODMT did).
Text fields: ``title`` (prod_name), ``categories`` (product group > type, garment group), ``colour``,
``description`` (detail_desc).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ...errors import DataError, ParamError
from ._common import check_columns, finish_interactions, finish_items, image_paths, missing_column, parse_error


def read_hm(path: Path, images: str | None = "auto", since: str | None = None):
    tfile = path / "transactions_train.csv"
    afile = path / "articles.csv"
    for f in (tfile, afile):
        if not f.exists():
            raise DataError("file not found", path=f)
    try:
        lf = pl.scan_csv(tfile, infer_schema=False)
        names = lf.collect_schema().names()
    except pl.exceptions.PolarsError as e:
        raise parse_error(tfile, e) from None
    for c in ("t_dat", "customer_id", "article_id"):
        if c not in names:
            raise missing_column(tfile, c, names)
    lf = lf.select("t_dat", "customer_id", "article_id").with_row_index("order")
    lf = lf.with_columns(pl.col("t_dat").str.to_date("%Y-%m-%d", strict=False).alias("day"),
                         pl.col("article_id").str.strip_chars().str.zfill(10).alias("item_orig"))
    if since is not None:
        try:
            day = pl.Series([since]).str.to_date("%Y-%m-%d")[0]
        except pl.exceptions.PolarsError:
            raise ParamError("options.since", f"must be a date YYYY-MM-DD, got {since!r}") from None
        lf = lf.filter(pl.col("day") >= day)
    try:
        df = lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise parse_error(tfile, e) from None
    bad = df["day"].is_null() | ~df["item_orig"].str.contains(r"^\d{10}$") | df["customer_id"].is_null()
    if bad.any():
        i = int(bad.arg_max())
        raise DataError(f"malformed row (t_dat {df['t_dat'][i]!r}, article_id {df['article_id'][i]!r})",
                        path=tfile, line=int(df["order"][i]) + 2)
    inter = df.select(pl.col("customer_id").alias("user_orig"), "item_orig",
                      (pl.col("day").cast(pl.Datetime("ms")).dt.epoch("s")).alias("timestamp"), "order")

    try:
        arts = pl.read_csv(afile, infer_schema=False)
    except pl.exceptions.PolarsError as e:
        raise parse_error(afile, e) from None
    check_columns(arts, ["article_id", "prod_name"], afile)
    col = lambda c: pl.col(c) if c in arts.columns else pl.lit(None, dtype=pl.String)  # noqa: E731
    items = arts.select(
        pl.col("article_id").str.strip_chars().str.zfill(10).alias("item_orig"),
        pl.col("prod_name").alias("title"),
        pl.concat_str([pl.concat_str([col("product_group_name"), col("product_type_name")], separator=" > ",
                                     ignore_nulls=True), col("garment_group_name")],
                      separator=", ", ignore_nulls=True).alias("categories"),
        col("colour_group_name").alias("colour"),
        col("detail_desc").alias("description"))
    folder = None
    if images == "auto":
        folder = path / "images" if (path / "images").is_dir() else None
    elif images is not None:
        folder = Path(images)
    items = items.with_columns(image_paths(items["item_orig"], folder, pattern="{id:.3}/{id}.jpg"))
    return finish_interactions(inter), finish_items(items)
