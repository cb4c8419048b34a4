"""Stage `metrics`: one flat ``reports/metrics.json`` that ``dvc metrics diff`` reads well.

Collects the runs of ``base.dataset`` that the report reads too (:func:`modalrec.report.collect.collect_runs`: the
models of ``runs.*`` and the seeds of ``base.seeds``, every family alike) into keys ``<ds>/<model>/<split>/<metric>``
(mean over the seeds present), ``<ds>/<model>/s<seed>/<split>/<metric>`` (each seed) and ``<ds>/<model>/n_seeds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import wall_seconds
from ..io import write_json
from ..params import get
from ..report.collect import collect_runs, flat_metrics


def collect(params: dict[str, Any], reports_root: str | Path, dataset: str) -> dict[str, float]:
    """The flat metrics of ``dataset``'s collected runs."""
    return flat_metrics(collect_runs(params, reports_root, [dataset]))


def run(params: dict[str, Any], dataset: str | None = None, reports_root: str | Path = "reports") -> Path:
    ds = dataset or get(params, "base.dataset")
    flat = collect(params, reports_root, ds)
    out = Path(reports_root) / "metrics.json"
    write_json(out, flat)
    n = sum(1 for k in flat if k.endswith("/n_seeds"))
    print(f"collected {n} models of {ds} into {out} ({len(flat)} keys) | wall {wall_seconds():.1f} s")
    return out
