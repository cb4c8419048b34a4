"""`train.nproc: 2`: the train stage launches 2 data-parallel processes itself (torch's elastic launcher, what
torchrun runs) and gives the outputs of the one-process stage: same history within float tolerance, rank 0's files."""

import json
from pathlib import Path

import pytest

from modalrec.errors import ParamError
from modalrec.params import load_params
from modalrec.stages import train as train_stage
from tiny_data import write_tiny_prepared

DS = "tiny_ddp"


def params(**train):
    repo = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return {"base": {"dataset": DS, "seeds": [5]},
            "train": {**repo["train"], "max_len": 8, "device": "cpu", "epochs": 2, "batch_size": 16, "lr": 3e-3,
                      "patience": 0, **train},
            "evaluate": {**repo["evaluate"], "batch_size": 64},
            "models": {"sasrec": {"arch": "sasrec", "dim": 8, "dropout": 0.0}}}


def test_train_nproc_2_equals_one_process(tmp_path):
    write_tiny_prepared(tmp_path / "data" / "prepared" / DS, DS, n_users=40, n_items=30, n_interactions=300)
    outs = {}
    for n in (1, 2):
        roots = {"data_root": tmp_path / "data", "models_root": tmp_path / f"models{n}"}
        outs[n] = Path(train_stage.run(params(nproc=n), model="sasrec", progress=False, **roots))
    h1, h2 = (json.loads((outs[n] / "history.json").read_text()) for n in (1, 2))
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    cfg = json.loads((outs[2] / "config.json").read_text())
    assert cfg["train"]["nproc"] == 2 and cfg["epochs_run"] == 2
    with pytest.raises(ParamError, match="train.nproc"):
        train_stage.run(params(nproc=0), model="sasrec", progress=False, data_root=tmp_path / "data",
                        models_root=tmp_path / "m0")
