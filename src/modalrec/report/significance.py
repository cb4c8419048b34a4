"""Paired significance tests of a proposed model against a baseline, over the same test units.

The unit is what the protocol averages over: a test **instance** (aggregate: instance) or a **user** (aggregate:
user, each user's instances averaged first). A unit's value is its metric (e.g. NDCG@10) computed from the target's
rank in ``per_user.parquet``, averaged over the seeds both models share; the test then pairs the two models' values
unit by unit (paired t-test, as KDSR's Table 2 "p < 0.05" marks, or Wilcoxon signed-rank). Averaging over seeds
first keeps the units independent (one user per unit) while still using every seed.

When ``per_user.parquet`` is missing for either model, the test falls back to pairing the per-seed metric values
(only meaningful with several seeds; reported with ``units: "seeds"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
from scipy import stats

from ..errors import DataError, ParamError
from ..evaluate.metrics import metric_arrays
from .aggregate import METRIC_RE, Table
from .collect import Run

METHODS = ("ttest", "wilcoxon")
RANK_COLUMNS = ("rank",)
USER_COLUMNS = ("user",)
POSITION_COLUMNS = ("position", "pos")
TARGET_COLUMNS = ("target", "item")


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "ttest") -> dict[str, Any]:
    """Two-sided paired test of ``a`` vs ``b`` (same length, paired by index).

    Returns ``{"method", "n", "mean_diff", "statistic", "p"}``. Identical samples give p = 1 (no evidence of a
    difference) rather than scipy's NaN; fewer than two pairs give p = NaN.
    """
    if method not in METHODS:
        raise ParamError("report.test", f"must be one of {METHODS}, got {method!r}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    d = a - b
    out = {"method": method, "n": int(len(d)), "mean_diff": float(d.mean()) if len(d) else math.nan}
    if len(d) < 2:
        return {**out, "statistic": math.nan, "p": math.nan}
    if np.all(d == 0):
        return {**out, "statistic": 0.0, "p": 1.0}
    if method == "ttest":
        if np.ptp(d) <= 1e-12 * np.abs(d).max():  # constant non-zero difference (up to rounding): zero variance
            return {**out, "statistic": math.copysign(math.inf, d[0]), "p": 0.0}
        r = stats.ttest_rel(a, b)
    else:
        r = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return {**out, "statistic": float(r.statistic), "p": float(r.pvalue)}


def _pick(cols: Sequence[str], names: Sequence[str]) -> str | None:
    return next((c for c in names if c in cols), None)


def load_ranks(path: str | Path) -> pl.DataFrame:
    """``per_user.parquet`` reduced to ``user``, ``key`` (the instance within the user) and ``rank`` (0-based).

    The instance key is the target's ``position`` in the user's sequence when present, else the target id with its
    occurrence number, so two models' files pair up regardless of row order.
    """
    path = Path(path)
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - a truncated/foreign file
        raise DataError(f"cannot read per-instance ranks: {e}", path=path) from None
    cols = df.columns
    rank, user = _pick(cols, RANK_COLUMNS), _pick(cols, USER_COLUMNS)
    if rank is None or user is None:
        raise DataError(f"needs columns 'user' and 'rank' (0-based target rank); has {cols}", path=path)
    pos, tgt = _pick(cols, POSITION_COLUMNS), _pick(cols, TARGET_COLUMNS)
    if pos is not None:
        key = pl.col(pos).cast(pl.Int64)
    elif tgt is not None:  # target id * 2^20 + occurrence number of that target for that user
        key = pl.col(tgt).cast(pl.Int64) * (1 << 20) + pl.int_range(pl.len()).over([user, tgt]).cast(pl.Int64)
    else:
        raise DataError("needs a 'position' or 'target' column to pair instances across models", path=path)
    out = df.select(pl.col(user).cast(pl.Int64).alias("user"), key.alias("key"),
                    pl.col(rank).cast(pl.Int64).alias("rank"))
    if out["rank"].null_count() or (len(out) and out["rank"].min() < 0):
        raise DataError("column 'rank' has nulls or negative values (ranks are 0-based)", path=path)
    return out


def unit_values(ranks: pl.DataFrame, metric: str, aggregate: str = "instance") -> pl.DataFrame:
    """Per-unit metric values: columns ``user``, ``key`` (instance; -1 for per-user units) and ``value``."""
    m = METRIC_RE.match(metric)
    if not m or m.group("branch"):
        raise ParamError("report.metrics", f"cannot compute {metric!r} from ranks")
    vals = metric_arrays(ranks["rank"].to_numpy(), int(m.group("k")))[f"{m.group('name')}@{m.group('k')}"]
    df = ranks.select("user", "key").with_columns(pl.Series("value", vals))
    if aggregate == "user":
        df = df.group_by("user").agg(pl.col("value").mean()).with_columns(pl.lit(-1, pl.Int64).alias("key"))
    return df.select("user", "key", "value")


def seed_averaged(runs: Sequence[Run], seeds: Sequence[int], metric: str, aggregate: str,
                  cache: dict[Path, pl.DataFrame] | None = None) -> pl.DataFrame:
    """Unit values averaged over ``seeds`` (only units present in every seed), sorted by (user, key)."""
    cache = {} if cache is None else cache
    frames = []
    by_seed = {r.seed: r for r in runs}
    for s in seeds:
        p = by_seed[s].per_user_path
        if p not in cache:
            cache[p] = load_ranks(p)
        frames.append(unit_values(cache[p], metric, aggregate).with_columns(pl.lit(s).alias("seed")))
    df = pl.concat(frames).group_by("user", "key").agg(pl.col("value").mean(), pl.len().alias("n"))
    return df.filter(pl.col("n") == len(seeds)).drop("n").sort("user", "key")


def compare(proposed: Sequence[Run], baseline: Sequence[Run], metric: str, aggregate: str = "instance",
            method: str = "ttest", cache: dict[Path, pl.DataFrame] | None = None) -> dict[str, Any]:
    """Paired test of ``proposed`` vs ``baseline`` runs (same dataset) on ``metric``.

    Uses the instance ranks of the seeds both have; falls back to per-seed metric values when a rank file is
    missing. Returns :func:`paired_test`'s dict plus ``units`` ("instances"/"users"/"seeds") and ``seeds``.
    """
    common = sorted({r.seed for r in proposed} & {r.seed for r in baseline})
    if not common:
        return {"method": method, "n": 0, "p": math.nan, "units": None, "seeds": [],
                "note": "no seed in common"}
    pr = [r for r in proposed if r.seed in common]
    br = [r for r in baseline if r.seed in common]
    if all(r.per_user_path.exists() for r in pr + br):
        a = seed_averaged(pr, common, metric, aggregate, cache)
        b = seed_averaged(br, common, metric, aggregate, cache)
        j = a.join(b, on=["user", "key"], how="inner", suffix="_b").sort("user", "key")
        if len(j) < min(len(a), len(b)):
            raise DataError(f"the per-instance ranks of the two models cover different test instances "
                            f"({len(a)} vs {len(b)}, {len(j)} shared): were they evaluated on the same split?",
                            path=pr[0].per_user_path)
        res = paired_test(j["value"].to_numpy(), j["value_b"].to_numpy(), method)
        units = "users" if aggregate == "user" else "instances"
    else:
        pa = {r.seed: r.test.get(metric) for r in pr}
        pb = {r.seed: r.test.get(metric) for r in br}
        ok = [s for s in common if pa.get(s) is not None and pb.get(s) is not None]
        res = paired_test([pa[s] for s in ok], [pb[s] for s in ok], method)
        units = "seeds"
    return {**res, "units": units, "seeds": common}


def annotate_significance(tables: Sequence[Table], runs: Sequence[Run], method: str = "ttest") -> None:
    """Fill every table's ``significance``: each proposed model against the metric's best baseline (:func:`compare`),
    per metric row of the table."""
    cache: dict[Path, pl.DataFrame] = {}
    for t in tables:
        agg = str(t.protocol.get("aggregate", "instance"))
        mine = [r for r in runs if r.dataset == t.dataset]
        for m in t.proposed:
            pr = [r for r in mine if r.model == m]
            for name in t.metrics:
                bb = t.best_baseline.get(name)
                if bb is None or name not in t.cells[m]:
                    continue
                br = [r for r in mine if r.model == bb]
                res = compare(pr, br, name, agg, method, cache)
                if t.protocol.get("select_on") == "test_max" and res.get("units") != "seeds":
                    res["note"] = ("paper-parity selection: the table shows per-metric maxima over epochs, the test "
                                   "uses the ranks of the validation-selected checkpoint")
                t.significance.setdefault(m, {})[name] = {**res, "baseline": bb}
