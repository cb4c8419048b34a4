"""Stage `metrics`: one flat ``reports/metrics.json`` that ``dvc metrics diff`` reads well.

Collects every ``reports/<ds>/<model>/s<seed>/metrics.json`` of the dataset (train/evaluate, KDSR and ODMT stages
alike) into keys ``<ds>/<model>/<split>/<metric>`` (mean over the seeds present) and
``<ds>/<model>/s<seed>/<split>/<metric>`` (each seed), plus ``<ds>/<model>/n_seeds``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import read_json, write_json
from ..params import get


def collect(reports_root: str | Path, dataset: str) -> dict[str, float]:
    root = Path(reports_root) / dataset
    flat: dict[str, float] = {}
    by_model: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, int] = defaultdict(int)
    for path in sorted(root.glob("*/s*/metrics.json")):
        model, seed_dir = path.parent.parent.name, path.parent.name
        try:
            m = read_json(path)
        except ValueError as e:
            raise DataError(f"not valid JSON: {e}", path=path) from None
        seeds[model] += 1
        for split in ("valid", "test"):
            for k, v in (m.get(split) or {}).items():
                flat[f"{dataset}/{model}/{seed_dir}/{split}/{k}"] = float(v)
                by_model[model][f"{split}/{k}"].append(float(v))
    out: dict[str, float] = {}
    for model in sorted(by_model):
        out[f"{dataset}/{model}/n_seeds"] = seeds[model]
        for k, vs in by_model[model].items():
            out[f"{dataset}/{model}/{k}"] = float(np.mean(vs))
    out.update(dict(sorted(flat.items())))
    return out


def run(params: dict[str, Any], dataset: str | None = None, reports_root: str | Path = "reports") -> Path:
    ds = dataset or get(params, "base.dataset")
    flat = collect(reports_root, ds)
    out = Path(reports_root) / "metrics.json"
    write_json(out, flat)
    n = sum(1 for k in flat if k.endswith("/n_seeds"))
    print(f"collected {n} models of {ds} into {out} ({len(flat)} keys)")
    return out
