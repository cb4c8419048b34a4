"""Aggregate the collected runs (:mod:`modalrec.report.collect`) over seeds into the summary's tables.

The report averages runs over seeds (mean ± sample std, ddof=1, as the papers' "average of five runs"), groups models
that were evaluated under the same protocol into one table (numbers under different protocols are not comparable:
ODMT masks the history and averages per user, KDSR does neither), and within a table finds the best baseline and
the best model per metric and the relative improvement of each proposed model (KDSR, ODMT) over the best baseline.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .collect import Run

# protocol keys that do not change what a number means (they vary per run or only select which ks exist)
RUN_KEYS = ("seed", "selected_epoch", "ks", "batch_size", "max_len")
# protocol keys that matter for comparability but are too verbose for the one-line description
QUIET_KEYS = ("split_params", "candidates")
METRIC_RE = re.compile(r"^(?:(?P<branch>.+)/)?(?P<name>[a-z_]+)@(?P<k>\d+)$")


def protocol_key(protocol: dict[str, Any]) -> tuple:
    """What makes two runs' numbers comparable: the protocol minus the per-run keys, hashable and ordered."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in protocol.items() if k not in RUN_KEYS))


def describe_protocol(protocol: dict[str, Any]) -> str:
    """A one-line human description, e.g. ``full ranking, history not masked, mean over instances, ...``."""
    p = protocol
    parts = [f"{p.get('ranking', 'full')} ranking",
             "history masked" if p.get("mask_history") else "history not masked",
             f"mean over {p.get('aggregate', 'instance')}s",
             "best test epoch per metric (paper parity)" if p.get("select_on") == "test_max"
             else f"epoch selected on {p.get('select_on', 'valid')}"]
    if p.get("split"):
        split = p["split"] if isinstance(p["split"], str) else json.dumps(p["split"], sort_keys=True)
        parts.insert(0, f"split {split}")
    if p.get("ties") not in (None, "optimistic"):
        parts.append(f"{p['ties']} ties")
    extra = sorted(k for k in p if k not in RUN_KEYS and k not in QUIET_KEYS and k not in
                   ("ranking", "mask_history", "aggregate", "select_on", "split", "ties", "paper_parity"))
    parts += [f"{k}={json.dumps(p[k], sort_keys=True)}" for k in extra]
    return ", ".join(parts)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


@dataclass
class Cell:
    mean: float
    std: float
    n: int  # seeds


@dataclass
class Table:
    """One dataset × protocol group: models (columns) × metrics (rows)."""

    dataset: str
    protocol: dict[str, Any]  # the shared protocol (run keys removed)
    models: list[str]
    proposed: list[str]  # the subset of models that are KDSR / ODMT variants
    metrics: list[str]  # row keys, e.g. "hr@5"
    cells: dict[str, dict[str, Cell]]  # model -> metric -> Cell
    seeds: dict[str, list[int]]  # model -> seeds
    best_baseline: dict[str, str | None] = field(default_factory=dict)  # metric -> model
    best_model: dict[str, str | None] = field(default_factory=dict)
    improvement: dict[str, dict[str, float]] = field(default_factory=dict)  # proposed -> metric -> relative
    significance: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # proposed -> metric -> test
    warnings: list[str] = field(default_factory=list)
    branches: dict[str, dict[str, Cell]] = field(default_factory=dict)  # "model/branch" -> metric -> Cell


def metric_order(names: Iterable[str], metrics: Iterable[str], ks: Iterable[int]) -> list[str]:
    """The table's rows: ``metrics`` × ``ks`` that occur in ``names``, ordered by metric then k (as the papers)."""
    have = set(names)
    return [f"{m}@{k}" for m in metrics for k in ks if f"{m}@{k}" in have]


def build_tables(runs: list[Run], proposed: Iterable[str], metrics: Iterable[str] = ("hr", "mrr", "ndcg"),
                 ks: Iterable[int] = (5, 10, 20), split_protocols: bool = True,
                 order: Iterable[str] | None = None) -> list[Table]:
    """Aggregate ``runs`` into tables: one per dataset, or one per (dataset, protocol) when ``split_protocols``.

    Columns: baselines first, then proposed models, each in ``order`` (params.yaml's order) then by name."""
    proposed = set(proposed)
    rank = {m: i for i, m in enumerate(order or [])}
    metrics, ks = list(metrics), [int(k) for k in ks]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        key = (r.dataset, protocol_key(r.protocol) if split_protocols else ())
        groups.setdefault(key, []).append(r)
    tables = []
    for (ds, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        by_model: dict[str, list[Run]] = {}
        for r in group:
            by_model.setdefault(r.model, []).append(r)
        models = sorted(by_model, key=lambda m: (m in proposed, rank.get(m, len(rank)), m))
        warnings = []
        pkeys = {m: {protocol_key(r.protocol) for r in rs} for m, rs in by_model.items()}
        if len(set().union(*pkeys.values())) > 1:
            warnings.append("models in this table were evaluated under different protocols: "
                            + "; ".join(f"{m}: {describe_protocol(by_model[m][0].protocol)}" for m in models)
                            + ". Their numbers are not comparable.")
        all_names = {k for rs in by_model.values() for r in rs for k in r.test if "/" not in k}
        rows = metric_order(all_names, metrics, ks)
        cells: dict[str, dict[str, Cell]] = {}
        branches: dict[str, dict[str, Cell]] = {}
        for m in models:
            rs = by_model[m]
            cells[m] = {}
            for name in rows:
                vals = [r.test[name] for r in rs if name in r.test]
                if vals:
                    cells[m][name] = Cell(*mean_std(vals), len(vals))
                if 0 < len(vals) < len(rs):
                    warnings.append(f"{m}: {name} is missing for some seeds")
            bnames = sorted({k for r in rs for k in r.test if "/" in k})
            for key in bnames:
                mm = METRIC_RE.match(key)
                if not mm or mm.group("name") not in metrics or int(mm.group("k")) not in ks:
                    continue
                vals = [r.test[key] for r in rs if key in r.test]
                branches.setdefault(f"{m}/{mm.group('branch')}", {})[f"{mm.group('name')}@{mm.group('k')}"] = \
                    Cell(*mean_std(vals), len(vals))
        shared = {k: v for k, v in group[0].protocol.items() if k not in RUN_KEYS}
        t = Table(ds, shared, models, [m for m in models if m in proposed], rows, cells,
                  {m: sorted(r.seed for r in by_model[m]) for m in models}, warnings=warnings, branches=branches)
        _rank(t)
        tables.append(t)
    return tables


def _best(cells: dict[str, dict[str, Cell]], models: list[str], metric: str) -> str | None:
    """The model with the highest mean; ties go to the first in table order (deterministic)."""
    best, val = None, -math.inf
    for m in models:
        c = cells[m].get(metric)
        if c is not None and c.mean > val:
            best, val = m, c.mean
    return best


def _rank(t: Table) -> None:
    baselines = [m for m in t.models if m not in t.proposed]
    for name in t.metrics:
        t.best_baseline[name] = _best(t.cells, baselines, name)
        t.best_model[name] = _best(t.cells, t.models, name)
        bb = t.best_baseline[name]
        for m in t.proposed:
            c = t.cells[m].get(name)
            if c is None or bb is None:
                continue
            base = t.cells[bb][name].mean
            t.improvement.setdefault(m, {})[name] = (c.mean - base) / base if base > 0 else math.nan


def table_to_dict(t: Table) -> dict[str, Any]:
    """The machine-readable twin of a rendered table (summary.json)."""
    def cell(c: Cell) -> dict[str, Any]:
        return {"mean": c.mean, "std": c.std, "n_seeds": c.n}

    return {
        "dataset": t.dataset, "protocol": t.protocol, "models": t.models, "proposed": t.proposed,
        "seeds": t.seeds, "metrics": t.metrics,
        "values": {m: {k: cell(c) for k, c in t.cells[m].items()} for m in t.models},
        "best_baseline": t.best_baseline, "best_model": t.best_model,
        "improvement": {m: {k: (None if math.isnan(v) else v) for k, v in d.items()}
                        for m, d in t.improvement.items()},
        "significance": t.significance,
        "branches": {b: {k: cell(c) for k, c in d.items()} for b, d in t.branches.items()},
        "warnings": t.warnings,
    }
