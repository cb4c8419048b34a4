"""A small fixture set of evaluated runs, written exactly as the evaluate stage and dvclive lay them out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from modalrec.evaluate.metrics import compute_metrics
from modalrec.stages.evaluate import per_user_table
from modalrec.report.popularity import train_counts_from_split
from modalrec.io import write_json, write_parquet

N_ITEMS = 40
N_USERS = 30
PROTOCOL = {"split": "loo", "ranking": "full", "mask_history": False, "aggregate": "instance", "ties": "optimistic",
            "select_on": "valid", "paper_parity": False, "ks": [5, 10, 20]}


def make_split(root: Path, ds: str = "toy") -> np.ndarray:
    """data/prepared/<ds>/split.parquet: item 40 never appears in training; returns the test targets."""
    rng = np.random.default_rng(0)
    items, n_train, targets = [], [], []
    for u in range(N_USERS):
        seq = list(rng.integers(1, N_ITEMS, size=6))  # training part uses items 1..39 only
        tgt = N_ITEMS if u % 5 == 0 else int(rng.integers(1, N_ITEMS))
        items.append([int(x) for x in seq] + [tgt])
        n_train.append(5)
        targets.append(tgt)
    tab = pa.table({"user": pa.array(range(N_USERS), pa.int32()), "items": pa.array(items, pa.list_(pa.int32())),
                    "n_train": pa.array(n_train, pa.int32()), "n_valid": pa.array([1] * N_USERS, pa.int32())})
    write_parquet(root / "data" / "prepared" / ds / "split.parquet", tab, {"split": {"name": "loo"}})
    return np.asarray(targets)


def train_counts(root: Path, ds: str) -> np.ndarray:
    counts = train_counts_from_split(root / "data" / "prepared" / ds / "split.parquet")
    return np.pad(counts, (0, N_ITEMS + 1 - len(counts)))


def write_run(root: Path, ds: str, model: str, seed: int, ranks: np.ndarray, targets: np.ndarray,
              protocol: dict | None = None, branches: dict | None = None, curves: dict | None = None) -> Path:
    d = root / "reports" / ds / model / f"s{seed}"
    proto = {**(protocol or PROTOCOL), "seed": seed, "selected_epoch": 3}
    users = np.arange(len(ranks))
    test = compute_metrics(ranks, proto["ks"], users, proto["aggregate"])
    for b, r in (branches or {}).items():
        test.update({f"{b}/{k}": v for k, v in compute_metrics(r, proto["ks"]).items()})
    write_json(d / "metrics.json", {"dataset": ds, "model": model, "protocol": proto,
                                    "valid": {"ndcg@10": test["ndcg@10"]}, "test": test, "n_test": len(ranks)})
    # the evaluate stage's own writer, so the report reads exactly the engine's columns
    inst = SimpleNamespace(users=users, positions=np.full(len(ranks), 6), targets=np.asarray(targets))
    res = SimpleNamespace(ranks=np.asarray(ranks), branch_ranks={b: np.asarray(r) for b, r in (branches or {}).items()})
    write_parquet(d / "per_user.parquet", per_user_table(inst, res, train_counts(root, ds)))
    live = root / "models" / ds / model / f"s{seed}" / "dvclive" / "plots" / "metrics"
    for name, vals in (curves or {"train/loss": [3.0, 2.5, 2.2], "valid/ndcg@10": [0.1, 0.15, 0.17]}).items():
        p = live / f"{name}.tsv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"step\t{name.rsplit('/', 1)[-1]}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(vals)))
    return d


def odmt_curves(seed: int) -> dict:
    """An ODMT run's dvclive series: ensemble and branch validation, distillation weight and loss (3 epochs)."""
    return {"train/loss": [3.0, 2.5, 2.2], "valid/hr@10": [0.1 * seed, 0.2, 0.3], "valid/id/hr@10": [0.1, 0.2, 0.2],
            "valid/text/hr@10": [0.05, 0.1, 0.15 * seed], "train/kd_weight": [0.01, 0.5, 1.0],
            "train/kd": [4.0, 3.0, 2.0 + seed], "train/ce": [9.0, 8.0, 7.0]}


def fixture_params(ds: str = "toy", seeds=(1, 2, 3)) -> dict:
    return {"base": {"dataset": ds, "seeds": list(seeds)},
            "runs": {"baselines": [{"model": "gru4rec", "code": "gru4rec", "data": "prepared"},
                                   {"model": "sasrec", "code": "sasrec", "data": "prepared"}],
                     "kdsr": [{"model": "kdsr_sasrec", "code": "sasrec"}],
                     "odmt": ["odmt", "sasrec_lf"]},
            "models": {"kdsr_sasrec": {"arch": "kdsr", "backbone": "sasrec"}, "odmt": {"arch": "odmt"},
                       "sasrec_lf": {"arch": "odmt", "objective": "late_fusion"}},
            "report": {"popularity": {"groups": 3, "metric": "hr@10"},
                       "sweep": {"param": "kdsr.D", "metric": "test/ndcg@10", "exps": "__none__"}}}


@pytest.fixture()
def fixture_runs(tmp_path: Path) -> Path:
    """3 seeds × (gru4rec, sasrec, kdsr_sasrec) under the instance protocol and (sasrec_lf, odmt) under ODMT's
    masked per-user protocol; kdsr_sasrec ranks are clearly better than sasrec's, odmt's are not."""
    targets = make_split(tmp_path)
    odmt_proto = {**PROTOCOL, "mask_history": True, "aggregate": "user", "ks": [10, 20]}
    for seed in (1, 2, 3):
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 30, size=N_USERS)
        write_run(tmp_path, "toy", "gru4rec", seed, base + 5, targets)
        write_run(tmp_path, "toy", "sasrec", seed, base, targets)
        write_run(tmp_path, "toy", "kdsr_sasrec", seed, np.maximum(base // 3, 0), targets,
                  curves={"train/loss": [3.0, 2.4], "valid/ndcg@10": [0.2, 0.3],
                          "forgetting/image_E_M": [0.9, 0.85], "forgetting/image_E_V": [0.2, 0.25]})
        write_run(tmp_path, "toy", "sasrec_lf", seed, base, targets, odmt_proto)
        noisy = np.clip(base + rng.integers(-2, 3, size=N_USERS), 0, None)
        write_run(tmp_path, "toy", "odmt", seed, noisy, targets, odmt_proto,
                  branches={"id": noisy + 1, "text": noisy + 2}, curves=odmt_curves(seed))
    return tmp_path
