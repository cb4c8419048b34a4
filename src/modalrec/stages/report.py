"""Stage `report`: reports/summary.md + summary.json + reports/plots/ from the evaluated runs (never trains).

Reads the ``report`` section (:class:`modalrec.report.config.ReportConfig`), ``runs.*``, ``models`` (which runs
are proposed methods), ``base.seeds`` and ``base.dataset``; for every dataset in ``report.datasets`` (default
``[base.dataset]``) the runs that :func:`modalrec.report.collect.collect_runs` keeps (the models of ``runs.*``,
the seeds of ``base.seeds``, as the metrics stage): ``reports/<ds>/<model>/s<seed>/{metrics.json,per_user.parquet}``,
``models/<ds>/<model>/s<seed>/dvclive/`` and, for the popularity groups, ``data/prepared/<ds>/split.parquet``.
What is missing is skipped with a note in the summary; a malformed file is an error naming it. The analyses live in
:mod:`modalrec.report` (:func:`modalrec.report.build.build_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import wall_seconds
from ..io import atomic_path, write_json
from ..params import get
from ..report.build import build_report
from ..report.collect import collect_runs, proposed_models, reported_models, reported_seeds
from ..report.config import ReportConfig
from ..report.sweep import export_exps


def run(params: dict[str, Any], reports_dir: str | Path = "reports", models_dir: str | Path = "models",
        data_dir: str | Path = "data", out_dir: str | Path = "reports", exps: bool = False, **_: Any) -> dict[str, Any]:
    """Aggregate, test and plot; write ``<out_dir>/summary.md``, ``summary.json`` and ``plots/``.

    Returns the summary.json object. ``exps=True`` first exports ``dvc exp show --json`` for the sweep plot.
    """
    cfg = ReportConfig.from_params(get(params, "report", {}))
    reports_dir, models_dir, data_dir, out_dir = map(Path, (reports_dir, models_dir, data_dir, out_dir))
    datasets = cfg.datasets or [get(params, "base.dataset")]
    listed = reported_models(params)
    proposed = list(cfg.proposed) if cfg.proposed is not None else proposed_models(params, listed)
    seeds = reported_seeds(params)
    if exps:
        export_exps(cfg.sweep.get("exps", "reports/exps.json"))
    runs = collect_runs(params, reports_dir, datasets)
    rep = build_report(cfg, runs, datasets, listed, proposed, seeds, reports_dir, models_dir, data_dir,
                       out_dir / "plots")
    with atomic_path(out_dir / "summary.md", suffix=".md.tmp") as tmp:
        tmp.write_text(rep.markdown)
    write_json(out_dir / "summary.json", rep.summary)
    print(f"report: {len(runs)} runs, {len(rep.tables)} tables, {rep.n_plots} plots, {rep.n_significant} significant "
          f"cells -> {out_dir / 'summary.md'} | wall {wall_seconds():.1f} s")
    return rep.summary
