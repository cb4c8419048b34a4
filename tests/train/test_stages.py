"""The train / evaluate / metrics stage runners end to end on a tiny prepared synthetic dataset (real MiniLM text
features for the frozen item representation): outputs, recorded protocol, test_max parity, clear errors."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from modalrec.errors import DataError, ParamError
from modalrec.params import load_params
from modalrec.stages import evaluate as ev_stage
from modalrec.stages import metrics as metrics_stage
from modalrec.stages import train as train_stage
from tiny_data import write_tiny_prepared

DS = "tiny"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    items = write_tiny_prepared(root / "data" / "prepared" / DS, DS, n_users=120, n_items=60, n_interactions=1100)
    from modalrec.encode.cache import write_features
    from modalrec.encode.registry import EncoderConfig, build_encoder

    enc = build_encoder(EncoderConfig(family="sentence_transformers", weights="all-MiniLM-L6-v2"), "text")
    with torch.inference_mode():
        vec = enc.forward(items["title"].to_list()).float().numpy()
    write_features(root / "data" / "features" / DS / "text.parquet", vec, np.ones(len(vec), bool),
                   meta={"family": "sentence_transformers", "weights": "all-MiniLM-L6-v2"})
    return root


def params(**train):
    """The repository's params.yaml sections, shrunk for speed."""
    repo = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return {"base": {"dataset": DS, "seeds": [5]},
            "runs": {"baselines": [{"model": "sasrec", "code": "sasrec", "data": "prepared"},  # what metrics collects
                                   {"model": "gru4rec_frozen_text", "code": "gru4rec", "data": "features"}]},
            "train": {**repo["train"], "max_len": 10, "device": "cpu", "epochs": 2, "batch_size": 32, "lr": 3e-3,
                      "patience": 2, **train},
            "evaluate": {**repo["evaluate"], "batch_size": 64},
            "models": {"sasrec": {"arch": "sasrec", "dim": 16},
                       "gru4rec_frozen_text": {"arch": "gru4rec", "dim": 16, "hidden": 16, "item_repr": "frozen",
                                               "modalities": ["text"], "evaluate": {"mask_history": True}},
                       "sasrec_tuned": {"arch": "sasrec", "dim": 16, "item_repr": "tuned", "modalities": ["text"]}}}


def dirs(root):
    return {"data_root": root / "data", "models_root": root / "models"}


def test_train_evaluate_metrics(roots):
    p = params()
    for model in ("sasrec", "gru4rec_frozen_text"):
        out = train_stage.run(p, model=model, progress=False, **dirs(roots))
        assert out == roots / "models" / DS / model / "s5"
        for f in ("best.pt", "last.pt", "config.json", "history.json", "dvclive"):
            assert (out / f).exists(), f
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["arch"] in ("sasrec", "gru4rec") and cfg["seed"] == 5 and cfg["epochs_run"] == 2
        rep = ev_stage.run(p, model=model, reports_root=roots / "reports", progress=False, **dirs(roots))
        m = json.loads((rep / "metrics.json").read_text())
        proto = m["protocol"]
        assert proto["ranking"] == "full" and proto["split"] == "ratio" and proto["seed"] == 5
        assert proto["select_on"] == "valid" and proto["paper_parity"] is False
        assert proto["selected_epoch"] == cfg["best_epoch"]
        assert proto["mask_history"] is (model == "gru4rec_frozen_text")  # the model's own override
        assert set(m["test"]) == {f"{x}@{k}" for x in ("hr", "mrr", "ndcg") for k in (5, 10, 20)}
        assert m["valid"]["ndcg@10"] == pytest.approx(cfg["best_value"])  # same protocol as during training
        # what the numbers depend on besides seed, code and data: recorded by training, copied by evaluation
        assert cfg["compute"] == {"torch": torch.__version__, "device": "cpu", "cpu_threads": torch.get_num_threads()}
        assert m["compute"] == cfg["compute"]
        pu = pl.read_parquet(rep / "per_user.parquet")
        assert pu.height == m["n_test"] and set(pu.columns) >= {"user", "position", "target", "rank",
                                                             "target_train_count"}
        assert (pu["rank"] < 10).mean() == pytest.approx(m["test"]["hr@10"])
    flat = json.loads((metrics_stage.run(p, reports_root=roots / "reports")).read_text())
    assert flat[f"{DS}/sasrec/test/ndcg@10"] == flat[f"{DS}/sasrec/s5/test/ndcg@10"]
    assert flat[f"{DS}/gru4rec_frozen_text/n_seeds"] == 1


def test_test_max_parity(roots):
    p = params(track_test=True, epochs=3, patience=0)
    train_stage.run(p, model="sasrec", seed=6, progress=False, **dirs(roots))
    p["evaluate"]["select_on"] = "test_max"
    rep = ev_stage.run(p, model="sasrec", seed=6, reports_root=roots / "reports", progress=False, **dirs(roots))
    m = json.loads((rep / "metrics.json").read_text())
    hist = json.loads((roots / "models" / DS / "sasrec" / "s6" / "history.json").read_text())
    assert m["protocol"]["paper_parity"] is True and m["protocol"]["selected_epoch"] is None
    assert m["test"]["hr@10"] == pytest.approx(max(h["test/hr@10"] for h in hist))
    assert m["test"]["mrr@5"] == pytest.approx(max(h["test/mrr@5"] for h in hist))


def test_errors_name_the_culprit(roots):
    p = params()
    p["evaluate"]["select_on"] = "test_max"
    train_stage.run(params(epochs=1), model="sasrec", seed=7, progress=False, **dirs(roots))
    with pytest.raises(ParamError, match="train.track_test"):
        ev_stage.run(p, model="sasrec", seed=7, reports_root=roots / "reports", progress=False, **dirs(roots))
    with pytest.raises(DataError, match="compressed/tiny/text.parquet.*compress stage"):  # compress stage output absent
        train_stage.run(params(), model="sasrec_tuned", progress=False, **dirs(roots))
    with pytest.raises(ParamError, match="models.nope"):
        train_stage.run(params(), model="nope", progress=False, **dirs(roots))
    with pytest.raises(ParamError, match="train.epochs"):
        train_stage.run(params(epochs=0), model="sasrec", progress=False, **dirs(roots))
    with pytest.raises(DataError, match="not trained"):
        ev_stage.run(params(), model="sasrec", seed=99, progress=False, **dirs(roots))
