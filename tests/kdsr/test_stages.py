"""KDSR end to end through the stage runners on a tiny dataset: distill (the real teacher) -> train -> evaluate
(the stages DVC's train_kdsr / evaluate_kdsr run), with params.yaml's kdsr section (paper preset) folded in."""

import copy
from pathlib import Path

import numpy as np

from modalrec.encode.cache import write_features
from modalrec.io import read_json
from modalrec.params import load_params
from tiny_data import write_tiny_prepared
from modalrec.stages import distill
from modalrec.stages import evaluate as evaluate_stage
from modalrec.stages import train as train_stage

ROOT = Path(__file__).resolve().parents[2]
DS = "tiny"


def make_project(root, n_items=50):
    """A tiny prepared dataset and 16-d sigmoid codes standing for the compress stage's m~ (two items lack images)."""
    items = write_tiny_prepared(root / "data" / "prepared" / DS, DS, n_items=n_items)
    n = len(items)
    rng = np.random.default_rng(0)
    for m in ("image", "text"):
        has = np.ones(n, bool)
        if m == "image":
            has[[3, 9]] = False
        z = 1 / (1 + np.exp(-2 * rng.normal(size=(n, 16)))) * has[:, None]
        write_features(root / "data" / "compressed" / DS / f"{m}.parquet", z.astype(np.float32), has,
                       meta={"family": "autoencoder"})
    return n


def test_kdsr_stages_end_to_end(tmp_path):
    n = make_project(tmp_path)
    p = copy.deepcopy(load_params(ROOT / "params.yaml"))
    p["base"] = {**p["base"], "dataset": DS, "seeds": [7]}
    p["compress"] = {**p["compress"], "modalities": ["image", "text"], "dim": 16}
    p["kdsr"].update({"seed": 7, "D": 4, "codes": 6, "pairs": {"cooccur": 3000, "random": 1000, "exact": False},
                      "quantizer_options": {"niter": 10}})
    p["kdsr"]["backbones"]["sasrec"] = {**p["kdsr"]["backbones"]["sasrec"], "dim": 16}
    p["kdsr"]["forgetting"] = {"enabled": True, "pairs": 500, "seed": 0}
    p["train"] = {**p["train"], "epochs": 2, "batch_size": 32, "device": "cpu", "max_len": 10}
    kw = {"data_root": tmp_path / "data", "models_root": tmp_path / "models", "progress": False}
    distill.run(p, **kw)
    out = train_stage.run(p, model="kdsr_sasrec", **kw)
    cfg = read_json(out / "config.json")
    assert cfg["cfg"]["preset"] == "kdsr" and cfg["cfg"]["weights"] == p["kdsr"]["presets"]["kdsr"]["weights"]
    assert "teacher" in cfg["inputs"] and cfg["epochs_run"] == 2
    hist = read_json(out / "history.json")
    for row in hist:  # loss components, the asynchronous LR and the forgetting probe, every epoch
        total = row["train/rec"] + sum(w[0] * row[f"train/cdl/{m}_holistic"] + w[1] * row[f"train/cdl/{m}_code"]
                                       for m, w in cfg["cfg"]["weights"].items())
        assert np.isclose(row["train/loss"], total, rtol=1e-5)
        assert row["lr/modality_tables"] < row["lr/id"]  # linear warm-up of the tables from 0.1 ε
        assert -1 <= row["forgetting/image_E_M"] <= 1 and -1 <= row["forgetting/text_E_V"] <= 1
    assert (out / "dvclive" / "plots" / "metrics" / "train" / "cdl" / "text_code.tsv").exists()
    rep = evaluate_stage.run(p, model="kdsr_sasrec", reports_root=tmp_path / "reports", **kw)
    metrics = read_json(Path(rep) / "metrics.json")
    assert metrics["model"] == "kdsr_sasrec" and 0 <= metrics["test"]["ndcg@10"] <= 1
    assert metrics["n_test"] > 0 and n == 50
