"""The papers' baselines (SR-GNN, FDSA, UniSRec, DIF-SR, NOVA, Trans2D, MMSRec) through the real train and
evaluate stage runners: one epoch each on a tiny prepared dataset with image and text feature caches, the checkpoint
reloaded by evaluate."""

import json
from pathlib import Path

import numpy as np
import pytest

from modalrec.encode.cache import write_features
from modalrec.params import load_params
from modalrec.stages import evaluate as ev_stage
from modalrec.stages import train as train_stage
from tiny_data import write_tiny_prepared

DS = "tiny"
ROOT = Path(__file__).resolve().parents[2]
MODELS = ["srgnn", "fdsa", "unisrec", "difsr", "nova", "trans2d", "mmsrec"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_baselines")
    items = write_tiny_prepared(root / "data" / "prepared" / DS, DS, n_users=80, n_items=40, n_interactions=700)
    rng = np.random.default_rng(0)
    for m, d in (("text", 12), ("image", 20)):
        has = np.ones(items.height, bool)
        has[3] = False
        vec = rng.normal(size=(items.height, d)).astype(np.float32) * has[:, None]
        write_features(root / "data" / "features" / DS / f"{m}.parquet", vec, has, meta={"family": "test"})
    return root


@pytest.mark.parametrize("model", MODELS)
def test_train_and_evaluate_stage(root, model):
    repo = load_params(ROOT / "params.yaml")
    entry = {**repo["models"][model], "dim": 16}
    p = {"base": {"dataset": DS, "seeds": [3]}, "runs": {"baselines": [{"model": model, "code": entry["arch"],
                                                                         "data": "features"}]},
         "train": {**repo["train"], "max_len": 8, "device": "cpu", "epochs": 1, "batch_size": 32},
         "evaluate": {**repo["evaluate"], "batch_size": 64},
         "models": {model: entry}}
    d = {"data_root": root / "data", "models_root": root / "models"}
    out = train_stage.run(p, model=model, progress=False, **d)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == entry["arch"] and cfg["epochs_run"] == 1
    rep = ev_stage.run(p, model=model, reports_root=root / "reports", progress=False, **d)
    m = json.loads((rep / "metrics.json").read_text())
    assert m["model"] == model and m["valid"]["ndcg@10"] == pytest.approx(cfg["best_value"])
    assert 0 <= m["test"]["hr@20"] <= 1 and m["n_test"] > 0
