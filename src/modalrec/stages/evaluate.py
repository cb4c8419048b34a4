"""Stage `evaluate`: full-ranking evaluation of one trained model and seed -> ``reports/<ds>/<model>/s<seed>/``.

``metrics.json`` states the whole protocol next to the numbers (docs/contracts.md); ``per_user.parquet`` has one
row per test instance (user, position, target, 0-based rank, the target's training popularity, per-branch ranks)
for significance tests and popularity-group analyses.

The model is rebuilt from the run's ``config.json`` (the exact options it was trained with) and its ``best.pt``.
``evaluate`` params + ``models.<name>.evaluate`` overrides choose the protocol. With ``select_on: test_max`` (KDSR
code parity) the test numbers are the per-metric maxima over the training epochs' test evaluations, which needs
``train.track_test: true``; ``per_user.parquet`` then still holds the ranks of the validation-selected checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import wall_seconds
from ..data.batching import eval_instances
from ..errors import DataError, ParamError
from ..evaluate.metrics import select_test_max
from ..evaluate.protocol import EvalConfig, evaluate
from ..io import read_json, write_json, write_parquet
from ..models.base import build_model
from ..params import get
from ..train import checkpoint as ckpt
from ..train.trainer import history_metrics
from ..runs import resolve_run
from .train import load_context, run_dir


def eval_config(params: dict[str, Any], overrides: dict[str, Any]) -> EvalConfig:
    section = dict(get(params, "evaluate", {}) or {})
    return EvalConfig.from_params({**section, **overrides}, key="evaluate")


def run(params: dict[str, Any], model: str, seed: int | None = None, dataset: str | None = None,
        data_root: str | Path = "data", models_root: str | Path = "models", reports_root: str | Path = "reports",
        progress: bool = True) -> Path:
    from ..data.prepared import load_prepared

    r = resolve_run(params, model, seed, dataset)
    mdir = run_dir(models_root, r.dataset, r.name, r.seed)
    cfg_path = mdir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"model {r.name!r} (seed {r.seed}) is not trained", path=cfg_path)
    trained = read_json(cfg_path)
    # rebuild exactly what was trained
    r = dataclasses.replace(r, arch=trained["arch"], cfg=trained["cfg"], max_len=int(trained["max_len"]))
    ecfg = eval_config(params, r.evaluate)
    prepared = load_prepared(Path(data_root) / "prepared" / r.dataset)
    ctx, _ = load_context(r, prepared, data_root, models_root)
    net = build_model(r.name, r.cfg, ctx, r.arch)
    best = ckpt.load(mdir / "best.pt")
    net.load_state_dict(best["model"])
    net.to(r.device)

    seqs, nt, nv = prepared.sequences, np.asarray(prepared.n_train), np.asarray(prepared.n_valid)
    valid = eval_instances(seqs, nt, nv, "valid", r.max_len)
    test = eval_instances(seqs, nt, nv, "test", r.max_len)
    if len(test) == 0:
        raise DataError("the split has no test instances", path=Path(data_root) / "prepared" / r.dataset)
    res_valid = evaluate(net, valid, ecfg, r.device, prepared.n_items, progress) if len(valid) else None
    res_test = evaluate(net, test, ecfg, r.device, prepared.n_items, progress)

    test_metrics = res_test.metrics
    selected_epoch: int | None = int(best["epoch"])
    if ecfg.select_on == "test_max":
        hist = read_json(mdir / "history.json") if (mdir / "history.json").exists() else []
        per_epoch = [h for h in history_metrics(hist, "test") if h]
        if not per_epoch:
            raise ParamError("evaluate.select_on", "test_max needs the per-epoch test metrics of training: set "
                                                   "train.track_test: true and retrain")
        test_metrics = select_test_max(per_epoch)
        selected_epoch = None

    split = (prepared.split_meta or {}).get("split", {})
    protocol = {"split": split.get("name", "unknown") if isinstance(split, dict) else str(split),
                "split_params": split,
                "ranking": "full", **{k: v for k, v in ecfg.protocol().items()},
                "paper_parity": ecfg.select_on == "test_max", "seed": r.seed, "selected_epoch": selected_epoch,
                "max_len": r.max_len, "candidates": "all items 1..N"}
    out = run_dir(reports_root, r.dataset, r.name, r.seed)
    write_parquet(out / "per_user.parquet", per_user_table(test, res_test, prepared.train_item_counts()),
                  meta={"dataset": r.dataset, "model": r.name, "seed": r.seed, "protocol": protocol,
                        "rank": "0-based; hit@k = rank < k"})
    metrics = {"dataset": r.dataset, "model": r.name, "arch": r.arch, "protocol": protocol,
               "valid": res_valid.metrics if res_valid else {}, "test": test_metrics,
               "n_valid": len(valid), "n_test": len(test), "n_test_users": int(len(np.unique(test.users))),
               "compute": trained.get("compute")}  # what training ran on (torch, device, CPU threads)
    write_json(out / "metrics.json", metrics)
    k = 10 if 10 in ecfg.ks else ecfg.ks[0]
    print(f"evaluated {r.name} (seed {r.seed}) on {r.dataset}: test ndcg@{k}={test_metrics.get(f'ndcg@{k}', 0):.4f} "
          f"hr@{k}={test_metrics.get(f'hr@{k}', 0):.4f} over {len(test)} instances "
          f"({res_test.seconds:.1f}s, {res_test.scores_per_second:,.0f} scores/s) -> {out} | wall {wall_seconds():.1f} s")
    return out


def per_user_table(inst, res, train_counts) -> pa.Table:
    """Instance-level test results in (user, position) order."""
    order = np.lexsort((inst.positions, inst.users))
    counts = np.asarray(train_counts)
    cols = {"user": pa.array(inst.users[order].astype(np.int32)),
            "position": pa.array(inst.positions[order].astype(np.int32)),
            "target": pa.array(inst.targets[order].astype(np.int32)),
            "rank": pa.array(res.ranks[order].astype(np.int64)),
            "target_train_count": pa.array(counts[inst.targets[order]].astype(np.int64))}
    for name, r in res.branch_ranks.items():
        cols[f"rank_{name}"] = pa.array(r[order].astype(np.int64))
    return pa.table(cols)

