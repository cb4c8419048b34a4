"""A parameter sweep (e.g. ``kdsr.D``) across DVC experiments: :func:`export_exps` writes ``dvc exp show --json``,
:func:`sweep_analysis` plots a metric of ``reports/metrics.json`` against the parameter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ..errors import DataError, ParamError
from ..io import atomic_path
from . import plots as P
from .aggregate import Table


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


def sweep_analysis(ds: str, tables: list[Table], sweep: dict[str, Any], plot_dir: Path
                   ) -> tuple[tuple[str, str] | None, dict[str, Any] | None, str]:
    """``sweep``: the ``report.sweep`` options (param, metric, exps, models). Returns (plot link, summary.json
    entry, "") or (None, None, a note saying why it was skipped)."""
    param = str(sweep.get("param", "kdsr.D"))
    metric = str(sweep.get("metric", "test/ndcg@10"))
    exps_path = Path(str(sweep.get("exps", "reports/exps.json")))
    if not exps_path.exists():
        return None, None, (f"parameter sweep skipped: {exps_path} not found (run `dvc exp run -S {param}=...` for "
                            f"several values, then `modalrec report --exps`)")
    try:
        exps = json.loads(exps_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", path=exps_path, line=e.lineno) from None
    models = sorted({m for t in tables if t.dataset == ds for m in t.models})
    wanted = sweep.get("models") or models
    keys = {m: f"{ds}/{m}/{metric}" for m in wanted}
    pts = P.sweep_points(exps, param, keys)
    pts = {m: p for m, p in pts.items() if len({x for x, _, _ in p}) >= 2}
    if not pts:
        return None, None, (f"parameter sweep skipped: fewer than two values of {param} with {metric} in "
                            f"{exps_path}")
    png = P.plot_sweep(pts, param, metric, f"{ds}: {metric} vs {param}",
                       plot_dir / f"{P.slug(ds)}_sweep_{P.slug(param)}.png")
    for m, p in pts.items():
        P.write_tsv(plot_dir / "data" / "sweep" / P.slug(ds) / f"{P.slug(m)}.tsv", ["param", "value", "exp"], p)
    return (f"Sweep of {param}", f"plots/{png.name}"), {"param": param, "metric": metric,
                                                        "points": {m: [list(x) for x in p] for m, p in pts.items()}}, ""


def best_by_model(exps: Any, dataset: str, models: list[str], monitor: str, show: tuple[str, ...] = (),
                  params: tuple[str, ...] = (), prefix: str = "") -> dict[str, dict[str, Any]]:
    """A hyper-parameter search's selection: for each model, the experiment whose ``<dataset>/<model>/<monitor>``
    (``reports/metrics.json``: the mean over the run's seeds) is highest; never a test metric unless asked.

    Returns ``{model: {"exp": name, monitor: value, **{m: value for m in show}, "params": {key: value}, "n": the
    experiments that had the model}}``; a model no experiment measured is absent. Ties: the first in DVC's order.
    Only experiments named ``prefix...`` count (the workspace and commits do not, unless the prefix matches them).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, data in P.exp_rows(exps):
        if not name.startswith(prefix):
            continue
        mets, pars = data.get("metrics") or {}, data.get("params") or {}
        for m in models:
            v = P.exp_value(mets, f"{dataset}/{m}/{monitor}")
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            best = out.setdefault(m, {"exp": None, monitor: -float("inf"), "n": 0})
            best["n"] += 1
            if v > best[monitor]:
                best.update({"exp": name, monitor: float(v), "params": {k: P.exp_value(pars, k) for k in params},
                             **{s: P.exp_value(mets, f"{dataset}/{m}/{s}") for s in show}})
    return out
