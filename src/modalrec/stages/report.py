"""Stage `report`: reports/summary.md + summary.json + reports/plots/ from the evaluated runs (never trains).

Reads, for every dataset in ``report.datasets`` (default ``[base.dataset]``), every model listed in
``train.models`` / ``kdsr.models`` / ``odmt.models`` and every seed in ``base.seeds``:
``reports/<ds>/<model>/s<seed>/{metrics.json,per_user.parquet}``, ``models/<ds>/<model>/s<seed>/dvclive/`` and,
for the popularity groups, ``data/prepared/<ds>/split.parquet``. What is missing is skipped with a note in the
summary; a malformed file is an error naming it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError, ParamError
from ..io import atomic_path, write_json
from ..params import dataclass_from, get
from ..report import plots as P
from ..report.aggregate import Run, Table, build_tables, discover_runs, table_to_dict
from ..report.render import dump_json_safe, render_summary
from ..report.significance import METHODS, compare

POPULARITY_COLUMNS = ("train_count", "target_count", "target_train_count", "popularity", "target_popularity",
                      "item_count", "count")


@dataclass
class ReportConfig:
    datasets: list[str] | None = None  # None = [base.dataset]
    metrics: list[str] = field(default_factory=lambda: ["hr", "mrr", "ndcg"])
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    proposed: list[str] | None = None  # None = kdsr.models + the arch-odmt models of odmt.models
    split_protocols: bool = True  # one table per evaluation protocol (else one table per dataset + a warning)
    test: str = "ttest"  # ttest | wilcoxon
    alpha: float = 0.05
    digits: int = 4
    curves: list[str] = field(default_factory=lambda: ["train/loss", "valid/ndcg@10", "valid/hr@10"])
    popularity: dict[str, Any] = field(default_factory=lambda: {"groups": 5, "metric": "ndcg@10"})
    sweep: dict[str, Any] = field(default_factory=lambda: {"param": "kdsr.D", "metric": "test/ndcg@10",
                                                            "exps": "reports/exps.json"})

    def __post_init__(self) -> None:
        if self.test not in METHODS:
            raise ParamError("report.test", f"must be one of {METHODS}, got {self.test!r}")
        if not 0 < float(self.alpha) < 1:
            raise ParamError("report.alpha", f"must be in (0, 1), got {self.alpha!r}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ParamError("report.ks", f"must be positive integers, got {self.ks!r}")
        g = self.popularity.get("groups", 5)
        if not isinstance(g, int) or g < 1:
            raise ParamError("report.popularity.groups", f"must be an integer >= 1, got {g!r}")
        if not re.fullmatch(r"[a-z]+@\d+", str(self.popularity.get("metric", "ndcg@10"))):
            raise ParamError("report.popularity.metric", "must look like 'ndcg@10'")

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> "ReportConfig":
        return dataclass_from(cls, section, "report")


def model_lists(params: dict[str, Any]) -> tuple[list[str] | None, list[str]]:
    """(models to report or None = all found, proposed models) from the families' lists in params.yaml."""
    train_sec = get(params, "train", {}) or {}
    train_m = [m for k in sorted(train_sec) if k == "models" or k.startswith("models_")  # models, models_frozen, ...
               for m in (train_sec[k] or [])]
    train_m = list(get(params, "train.models", []) or []) + [m for m in train_m if m not in (train_sec.get("models") or [])]
    kdsr_m = list(get(params, "kdsr.models", []) or [])
    odmt_m = list(get(params, "odmt.models", []) or [])
    entries = get(params, "models", {}) or {}
    odmt_prop = [m for m in odmt_m if ((entries.get(m) or {}).get("arch", m)) == "odmt"]
    listed = list(dict.fromkeys(train_m + kdsr_m + odmt_m))  # params order, no duplicates
    return (listed or None), kdsr_m + odmt_prop


def _seeds(params: dict[str, Any]) -> list[int]:
    seeds = get(params, "base.seeds", None)
    if seeds is None:
        seeds = [get(params, "base.seed", 2023)]
    if isinstance(seeds, int):
        seeds = [seeds]
    return [int(s) for s in seeds]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name)


# -------------------------------------------------------------------------------------------------- analyses
def _significance(tables: list[Table], runs: list[Run], method: str) -> None:
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


def train_counts_from_split(path: Path) -> np.ndarray | None:
    """Training popularity of every item id (index = item) from ``split.parquet``; None when absent."""
    if not path.exists():
        return None
    try:
        df = pl.read_parquet(path, columns=["items", "n_train"])
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read the split: {e}", path=path) from None
    train = df.select(pl.col("items").list.head(pl.col("n_train")).alias("t")).explode("t")["t"].drop_nulls()
    all_items = df.select(pl.col("items").explode())["items"].drop_nulls()
    n = int(all_items.max()) if len(all_items) else 0
    return np.bincount(train.to_numpy().astype(np.int64), minlength=n + 1)


def _popularity(t: Table, runs: list[Run], counts: np.ndarray | None, cfg: ReportConfig, plot_dir: Path,
                slug: str) -> tuple[dict[str, Any] | None, str | None]:
    """Per-model metric by popularity group for one table; returns (summary.json entry, note)."""
    G = int(cfg.popularity.get("groups", 5))
    metric = str(cfg.popularity.get("metric", "ndcg@10"))
    name, k = metric.split("@")
    frames: dict[str, list[tuple[Path, pl.DataFrame]]] = {}
    for r in runs:
        if r.dataset == t.dataset and r.model in t.models and r.per_user_path.exists():
            df = pl.read_parquet(r.per_user_path)
            tgt = next((c for c in ("target", "item") if c in df.columns), None)
            if tgt is None or "rank" not in df.columns:
                raise DataError(f"needs columns 'target' and 'rank' for the popularity analysis; has {df.columns}",
                                path=r.per_user_path)
            frames.setdefault(r.model, []).append((r.per_user_path, df))
    if not frames:
        return None, "popularity groups skipped: no per_user.parquet files"
    if counts is None:  # fall back to the training counts recorded next to the ranks
        pairs = []
        for dfs in frames.values():
            for _, df in dfs:
                pc = next((c for c in POPULARITY_COLUMNS if c in df.columns), None)
                if pc is not None:
                    tgt = "target" if "target" in df.columns else "item"
                    pairs.append(df.select(pl.col(tgt).cast(pl.Int64).alias("i"), pl.col(pc).cast(pl.Int64).alias("c")))
        if not pairs:
            return None, ("popularity groups skipped: neither data/prepared/<ds>/split.parquet nor a training-count "
                          "column in per_user.parquet")
        pc_df = pl.concat(pairs).unique("i").sort("i")
        counts = np.zeros(int(pc_df["i"].max()) + 1, dtype=np.int64)
        counts[pc_df["i"].to_numpy()] = pc_df["c"].to_numpy()
    groups = P.popularity_groups(counts, G)
    n_groups = int(groups.max()) if len(groups) else 0
    values: dict[str, list[float]] = {}
    n_inst: list[int] = []
    for m in t.models:
        if m not in frames:
            continue
        per_seed = []
        for path, df in frames[m]:
            tgt = "target" if "target" in df.columns else "item"
            targets = df[tgt].to_numpy().astype(np.int64)
            if len(targets) and targets.max() >= len(groups):
                raise DataError(f"target item {int(targets.max())} is outside the catalogue (N={len(groups) - 1})",
                                path=path)
            means, n_inst = P.group_metric(targets, df["rank"].to_numpy(), groups, int(k), name, n_groups)
            per_seed.append(means)
        arr = np.asarray(per_seed, dtype=np.float64)  # [seeds, groups]; NaN = empty group
        n_ok = (~np.isnan(arr)).sum(0)
        mean = np.where(n_ok > 0, np.nansum(arr, 0) / np.maximum(n_ok, 1), math.nan)
        values[m] = [float(v) for v in mean]
    png = P.plot_groups(values, n_inst, metric, f"{t.dataset}: {metric} by item popularity",
                        plot_dir / f"{slug}_popularity.png")
    for m, v in values.items():
        P.write_tsv(plot_dir / "data" / "popularity" / slug / f"{_slug(m)}.tsv", ["group", "value", "n"],
                    [(g, v[g], n_inst[g]) for g in range(len(v))])
    return {"metric": metric, "groups": n_groups, "instances": n_inst, "values": values, "png": png.name}, None


def _curves(ds: str, runs: list[Run], models_dir: Path, cfg: ReportConfig, plot_dir: Path
            ) -> tuple[list[tuple[str, str]], dict[str, dict[str, P.Series]], list[str]]:
    """Training-curve PNGs per model and the forgetting series (model -> label -> mean series)."""
    out, notes = [], []
    forgetting: dict[str, dict[str, P.Series]] = {}
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        if r.dataset == ds:
            by_model.setdefault(r.model, []).append(r)
    missing = []
    for m in sorted(by_model):
        logs = {}
        for r in by_model[m]:
            live = models_dir / ds / m / f"s{r.seed}" / "dvclive"
            series = P.read_dvclive(live)
            if series:
                logs[r.seed] = series
        if not logs:
            missing.append(m)
            continue
        names = [s for s in cfg.curves if any(s in v for v in logs.values())]
        if not names:  # fall back to the loss and every validation metric at k=10
            names = sorted({s for v in logs.values() for s in v if s == "train/loss" or
                            (s.startswith("valid/") and s.endswith("@10") and s.count("/") == 1)})
        png = P.plot_training(logs, names, f"{ds} / {m}: training curves", plot_dir / f"{_slug(ds)}_training_{_slug(m)}.png")
        out.append((f"Training curves: {m}", f"plots/{png.name}"))
        for seed, series in logs.items():
            for s in names:
                if s in series:
                    P.write_tsv(plot_dir / "data" / "training" / _slug(ds) / _slug(m) / f"s{seed}" / f"{s}.tsv",
                                ["step", "value"], series[s])
        fseries = sorted({s for v in logs.values() for s in v if s.startswith("forgetting/")})
        for s in fseries:
            steps: dict[int, list[float]] = {}
            for series in logs.values():
                for step, val in series.get(s, []):
                    steps.setdefault(step, []).append(val)
            forgetting.setdefault(m, {})[s[len("forgetting/"):]] = [(st, float(np.mean(v))) for st, v in sorted(steps.items())]
    if missing:
        notes.append(f"no training logs (models/{ds}/<model>/s<seed>/dvclive) for: {', '.join(missing)}")
    return out, forgetting, notes


def _sweep(ds: str, tables: list[Table], cfg: ReportConfig, plot_dir: Path
           ) -> tuple[tuple[str, str] | None, dict[str, Any] | None, str]:
    param = str(cfg.sweep.get("param", "kdsr.D"))
    metric = str(cfg.sweep.get("metric", "test/ndcg@10"))
    exps_path = Path(str(cfg.sweep.get("exps", "reports/exps.json")))
    if not exps_path.exists():
        return None, None, (f"parameter sweep skipped: {exps_path} not found (run `dvc exp run -S {param}=...` for "
                            f"several values, then `modalrec report --exps`)")
    try:
        exps = json.loads(exps_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", path=exps_path, line=e.lineno) from None
    models = sorted({m for t in tables if t.dataset == ds for m in t.models})
    wanted = cfg.sweep.get("models") or models
    keys = {m: f"{ds}/{m}/{metric}" for m in wanted}
    pts = P.sweep_points(exps, param, keys)
    pts = {m: p for m, p in pts.items() if len({x for x, _, _ in p}) >= 2}
    if not pts:
        return None, None, (f"parameter sweep skipped: fewer than two values of {param} with {metric} in "
                            f"{exps_path}")
    png = P.plot_sweep(pts, param, metric, f"{ds}: {metric} vs {param}",
                       plot_dir / f"{_slug(ds)}_sweep_{_slug(param)}.png")
    for m, p in pts.items():
        P.write_tsv(plot_dir / "data" / "sweep" / _slug(ds) / f"{_slug(m)}.tsv", ["param", "value", "exp"], p)
    return (f"Sweep of {param}", f"plots/{png.name}"), {"param": param, "metric": metric,
                                                        "points": {m: [list(x) for x in p] for m, p in pts.items()}}, ""


# -------------------------------------------------------------------------------------------------------- run
def export_exps(path: str | Path = "reports/exps.json") -> Path:
    """Write ``dvc exp show --json`` to ``path`` (input of the sweep plot)."""
    try:
        res = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ParamError("report.sweep.exps", "`dvc` is not on PATH; cannot list experiments") from None
    if res.returncode != 0:
        raise DataError(f"`dvc exp show --json` failed: {res.stderr.strip()[-500:]}")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(res.stdout)
    return path


def _clear_plots(plot_dir: Path) -> None:
    """Remove the previous report's PNGs and plot data (only what this stage writes), so no stale figure of a
    model that is no longer reported survives."""
    import shutil

    if (plot_dir / "data").is_dir():
        shutil.rmtree(plot_dir / "data")
    for png in plot_dir.glob("*.png") if plot_dir.is_dir() else []:
        png.unlink()
    plot_dir.mkdir(parents=True, exist_ok=True)


def run(params: dict[str, Any], reports_dir: str | Path = "reports", models_dir: str | Path = "models",
        data_dir: str | Path = "data", out_dir: str | Path = "reports", exps: bool = False, **_: Any) -> dict[str, Any]:
    """Aggregate, test and plot; write ``<out_dir>/summary.md``, ``summary.json`` and ``plots/``.

    Returns the summary.json object. ``exps=True`` first exports ``dvc exp show --json`` for the sweep plot.
    """
    cfg = ReportConfig.from_params(get(params, "report", {}))
    reports_dir, models_dir, data_dir, out_dir = map(Path, (reports_dir, models_dir, data_dir, out_dir))
    datasets = cfg.datasets or [get(params, "base.dataset")]
    listed, proposed = model_lists(params)
    if cfg.proposed is not None:
        proposed = list(cfg.proposed)
    seeds = _seeds(params)
    if exps:
        export_exps(cfg.sweep.get("exps", "reports/exps.json"))
    runs = discover_runs(reports_dir, datasets, listed, seeds)
    tables = build_tables(runs, proposed, cfg.metrics, cfg.ks, cfg.split_protocols, order=listed)
    _significance(tables, runs, cfg.test)

    plot_dir = out_dir / "plots"
    _clear_plots(plot_dir)
    for sub in ("training", "forgetting", "popularity", "sweep"):
        (plot_dir / "data" / sub).mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[tuple[str, str]]] = {}
    notes: dict[str, list[str]] = {}
    extra: dict[str, Any] = {}
    for ds in datasets:
        ds_plots, ds_notes, ds_extra = [], [], {}
        found = {r.model for r in runs if r.dataset == ds}
        if not found:
            ds_notes.append(f"no evaluated runs under {reports_dir}/{ds}/<model>/s<seed>/metrics.json "
                            f"(seeds {seeds}); run the train/evaluate stages first")
        if listed:
            absent = sorted(set(listed) - found)
            if absent and found:
                ds_notes.append(f"listed in params but not evaluated yet: {', '.join(absent)}")
        curves, forgetting, n = _curves(ds, runs, models_dir, cfg, plot_dir)
        ds_plots += curves
        ds_notes += n
        if forgetting:
            lines = {f"{m}: {s}": pts for m, d in forgetting.items() for s, pts in d.items()}
            png = P.plot_lines(lines, f"{ds}: modality forgetting (mean over seeds)", "correlation",
                               plot_dir / f"{_slug(ds)}_forgetting.png")
            ds_plots.append(("Modality forgetting", f"plots/{png.name}"))
            for m, d in forgetting.items():
                for s, pts in d.items():
                    P.write_tsv(plot_dir / "data" / "forgetting" / _slug(ds) / _slug(m) / f"{s}.tsv",
                                ["step", "value"], pts)
        elif found:
            ds_notes.append("no modality-forgetting series (dvclive metrics under `forgetting/`, logged by KDSR "
                            "models) found")
        counts = train_counts_from_split(data_dir / "prepared" / ds / "split.parquet")
        dts = [t for t in tables if t.dataset == ds]
        ds_extra["popularity"] = []
        for i, t in enumerate(dts, start=1):
            slug = _slug(ds) if len(dts) == 1 else f"{_slug(ds)}-t{i}"
            pop, note = _popularity(t, runs, counts, cfg, plot_dir, slug)
            if pop is not None:
                title = "Performance by item popularity" + (f" (table {i})" if len(dts) > 1 else "")
                ds_plots.append((title, f"plots/{pop['png']}"))
                ds_extra["popularity"].append({"table": i, **pop})
            elif note:
                ds_notes.append(note)
        if found:
            sw, sw_data, note = _sweep(ds, dts, cfg, plot_dir)
            if sw is not None:
                ds_plots.append(sw)
                ds_extra["sweep"] = sw_data
            else:
                ds_notes.append(note)
        plots[ds], notes[ds], extra[ds] = ds_plots, ds_notes, ds_extra

    header = [f"{len(runs)} evaluated runs ({len({(r.dataset, r.model) for r in runs})} models × seeds) from "
              f"`{reports_dir}/<dataset>/<model>/s<seed>/metrics.json`. Generated by `modalrec report` "
              f"(stage `report`); machine-readable twin: `summary.json`."]
    md = render_summary(tables, plots, notes, cfg.alpha, cfg.test, header, cfg.digits)
    summary = dump_json_safe({
        "runs": [{"dataset": r.dataset, "model": r.model, "seed": r.seed, "dir": str(r.dir)} for r in runs],
        "test": cfg.test, "alpha": cfg.alpha,
        "tables": [table_to_dict(t) for t in tables],
        "plots": {ds: [{"title": a, "path": b} for a, b in v] for ds, v in plots.items()},
        "analyses": extra, "notes": notes,
    })
    with atomic_path(out_dir / "summary.md", suffix=".md.tmp") as tmp:
        tmp.write_text(md)
    write_json(out_dir / "summary.json", summary)
    n_png = sum(len(v) for v in plots.values())
    n_sig = sum(1 for t in tables for d in t.significance.values() for s in d.values()
                if s.get("p") is not None and not math.isnan(s["p"]) and s["p"] < cfg.alpha)
    print(f"report: {len(runs)} runs, {len(tables)} tables, {n_png} plots, {n_sig} significant cells "
          f"-> {out_dir / 'summary.md'}")
    return summary
