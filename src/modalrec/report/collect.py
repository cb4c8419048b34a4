"""Which evaluated runs the metrics and report stages read: one collector, one rule.

A *run* is one (dataset, model, seed): ``reports/<ds>/<model>/s<seed>/metrics.json`` (+ ``per_user.parquet``),
written by any family's evaluate stage. :func:`collect_runs` keeps exactly the runs of the models listed in
params.yaml ``runs.*`` (:func:`modalrec.params.listed_runs`) and the seeds in ``base.seeds``, so a stale output of a
model or seed no longer in params.yaml reaches neither ``reports/metrics.json`` nor the summary, and the two agree.
:func:`flat_metrics` is the layout of ``reports/metrics.json`` (what ``dvc metrics diff`` reads).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DataError, ParamError
from ..io import read_json
from ..params import get, is_proposed, listed_runs

SPLITS = ("valid", "test")


@dataclass
class Run:
    """One evaluated (dataset, model, seed)."""

    dataset: str
    model: str
    seed: int
    dir: Path  # reports/<ds>/<model>/s<seed>
    protocol: dict[str, Any]
    test: dict[str, float]  # "hr@10", ..., "<branch>/hr@10"
    valid: dict[str, float]
    n_test: int | None = None

    @property
    def per_user_path(self) -> Path:
        return self.dir / "per_user.parquet"


def reported_models(params: dict[str, Any]) -> list[str]:
    """The models of every ``runs.<family>`` list, in params.yaml order (families in order), without duplicates."""
    return list(dict.fromkeys(m for names in listed_runs(params).values() for m in names))


def proposed_models(params: dict[str, Any], models: Iterable[str] | None = None) -> list[str]:
    """The papers' methods among ``models`` (default: :func:`reported_models`), by :func:`modalrec.params.is_proposed`."""
    return [m for m in (reported_models(params) if models is None else models) if is_proposed(params, m)]


def reported_seeds(params: dict[str, Any]) -> list[int]:
    """``base.seeds`` as a list of ints (a single int is one seed)."""
    seeds = get(params, "base.seeds", None)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        raise ParamError("base.seeds", f"must be a list of integer seeds, got {seeds!r}")
    return [int(s) for s in seeds]


def load_metrics(path: Path) -> dict[str, Any]:
    """One ``metrics.json``: a JSON object with a ``test`` object (and optionally ``valid``) of numbers."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", path=path)
    if not isinstance(obj.get("test"), dict):
        raise DataError("has no 'test' metrics object", path=path)
    for split in ("test", "valid"):
        for k, v in (obj.get(split) or {}).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise DataError(f"{split}/{k} is {v!r}, not a number", path=path)
    return obj


def discover_runs(reports_dir: str | Path, datasets: Iterable[str] | None = None,
                  models: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[Run]:
    """Every ``<reports_dir>/<ds>/<model>/s<seed>/metrics.json``, sorted by path (dataset, model, seed directory).

    ``datasets``/``models``/``seeds`` restrict the result (None = everything found); :func:`collect_runs` applies
    the pipeline's rule.
    """
    root = Path(reports_dir)
    ds_set = None if datasets is None else set(datasets)
    m_set = None if models is None else set(models)
    s_set = None if seeds is None else {int(s) for s in seeds}
    runs: list[Run] = []
    for path in sorted(root.glob("*/*/s*/metrics.json")):
        seed_dir, model_dir, ds_dir = path.parent, path.parent.parent, path.parent.parent.parent
        if not re.fullmatch(r"s-?\d+", seed_dir.name):
            continue
        ds, model, seed = ds_dir.name, model_dir.name, int(seed_dir.name[1:])
        if (ds_set is not None and ds not in ds_set) or (m_set is not None and model not in m_set) \
                or (s_set is not None and seed not in s_set):
            continue
        obj = load_metrics(path)
        runs.append(Run(ds, model, seed, seed_dir, dict(obj.get("protocol") or {}),
                        {k: float(v) for k, v in obj["test"].items()},
                        {k: float(v) for k, v in (obj.get("valid") or {}).items()}, obj.get("n_test")))
    return runs


def collect_runs(params: dict[str, Any], reports_dir: str | Path, datasets: Iterable[str]) -> list[Run]:
    """The one rule of both stages: the runs of ``datasets`` whose model is listed in ``runs.*`` and whose seed is
    in ``base.seeds``; a malformed metrics file among them is a DataError naming it."""
    return discover_runs(reports_dir, list(datasets), reported_models(params), reported_seeds(params))


def flat_metrics(runs: Iterable[Run]) -> dict[str, float]:
    """``reports/metrics.json``: per model ``<ds>/<model>/n_seeds`` and ``<ds>/<model>/<split>/<metric>`` (mean over
    the seeds that have it), models sorted; then every ``<ds>/<model>/s<seed>/<split>/<metric>``, keys sorted."""
    flat: dict[str, float] = {}
    by_model: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    n_seeds: dict[tuple[str, str], int] = defaultdict(int)
    for r in runs:
        key = (r.dataset, r.model)
        n_seeds[key] += 1
        for split in SPLITS:
            for k, v in getattr(r, split).items():
                flat[f"{r.dataset}/{r.model}/{r.dir.name}/{split}/{k}"] = float(v)
                by_model[key][f"{split}/{k}"].append(float(v))
    out: dict[str, float] = {}
    for ds, model in sorted(n_seeds):
        out[f"{ds}/{model}/n_seeds"] = n_seeds[(ds, model)]
        for k, vs in by_model[(ds, model)].items():
            out[f"{ds}/{model}/{k}"] = float(np.mean(vs))
    out.update(dict(sorted(flat.items())))
    return out
