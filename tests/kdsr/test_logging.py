"""The trainer logs KDSR's loss components per epoch (train/rec, train/cdl/<m>_holistic, train/cdl/<m>_code)."""

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_windows
from modalrec.evaluate.protocol import EvalConfig
from modalrec.models import ModelContext, build_model
from modalrec.train.trainer import TrainConfig, Trainer

from .helpers import random_teacher

N = 30


def test_loss_components_are_logged_per_epoch_and_add_up_to_the_loss(tmp_path):
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.rand(N + 1, 8, generator=g) for m in ("image", "text")}
    ctx = ModelContext(n_items=N, max_len=8, compressed=comp, teacher=random_teacher(N, 4))
    weights = {"image": [1.0, 0.5], "text": [0.25, 2.0]}
    torch.manual_seed(0)
    model = build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"dim": 8, "layers": 1},
                                 "weights": weights}, ctx)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, 7) for _ in range(40)]
    nt, nv = np.full(40, 5), np.ones(40, dtype=int)
    res = Trainer(model, train_windows(seqs, nt, 8), TrainConfig(epochs=2, batch_size=8, lr=1e-2), tmp_path, seed=0,
                  valid=eval_instances(seqs, nt, nv, "valid", 8), eval_cfg=EvalConfig(ks=[10]), live=True,
                  progress=False).fit()
    parts = ["rec"] + [f"cdl/{m}_{k}" for m in ("image", "text") for k in ("holistic", "code")]
    for row in res.history:
        assert all(np.isfinite(row[f"train/{p}"]) for p in parts)
        # batch totals are rec + Σ weighted parts, so the epoch means add up the same way
        total = row["train/rec"] + sum(weights[m][0] * row[f"train/cdl/{m}_holistic"] +
                                       weights[m][1] * row[f"train/cdl/{m}_code"] for m in ("image", "text"))
        assert row["train/loss"] == pytest.approx(total, rel=1e-5)
    assert res.history[0]["train/rec"] != res.history[1]["train/rec"]
    for p in parts:  # one dvclive series per component, one row per epoch
        tsv = tmp_path / "dvclive" / "plots" / "metrics" / "train" / f"{p}.tsv"
        assert len(tsv.read_text().strip().splitlines()) == 3
