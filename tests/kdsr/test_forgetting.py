"""Modality-forgetting probe: Pearson of sampled pair similarities, logged per epoch through dvclive."""

import numpy as np
import pytest
import torch
from torch import nn

from modalrec.analysis.forgetting import ForgettingProbe, pair_cosine, pearson, sample_pairs
from modalrec.data.batching import eval_instances, train_windows
from modalrec.evaluate.protocol import EvalConfig
from modalrec.models import ModelContext, build_model
from modalrec.train.trainer import TrainConfig, Trainer


class Tables(nn.Module):
    def __init__(self, E, V):
        super().__init__()
        self.E, self.V = nn.Embedding.from_pretrained(E, freeze=False), nn.Embedding.from_pretrained(V)

    def modality_tables(self):
        return {"image": self.E}

    def id_table(self):
        return self.V


def test_pairs_are_distinct_seeded_and_skip_items_without_the_modality():
    cand = np.array([2, 3, 5, 8])
    i, j = sample_pairs(cand, 1000, seed=3)
    assert (i != j).all() and set(i.tolist()) | set(j.tolist()) <= set(cand.tolist())
    i2, j2 = sample_pairs(cand, 1000, seed=3)
    assert torch.equal(i, i2) and torch.equal(j, j2)
    M = torch.rand(10, 4)
    M[[0, 4]] = 0
    probe = ForgettingProbe({"image": M}, n_pairs=500)
    pi, pj = probe.pairs["image"]
    assert not set(pi.tolist()) & {0, 4} and not set(pj.tolist()) & {0, 4}


def test_pearson_by_hand_and_probe_values():
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 4, 7])) == pytest.approx(
        np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])
    g = torch.Generator().manual_seed(0)
    M = torch.rand(200, 8, generator=g)
    M[0] = 0
    V = torch.randn(200, 8, generator=g)
    probe = ForgettingProbe({"image": M}, n_pairs=3000, seed=1)
    same = probe.measure(Tables(M.clone(), V))
    assert same["forgetting/image_E_M"] == pytest.approx(1.0)
    i, j = probe.pairs["image"]
    assert same["forgetting/image_E_V"] == pytest.approx(pearson(pair_cosine(M, i, j), pair_cosine(V, i, j)))
    drift = probe.measure(Tables(M + 0.5 * torch.randn(200, 8, generator=g), V))
    assert drift["forgetting/image_E_M"] < 0.9


def test_probe_is_logged_per_epoch_by_dvclive(tmp_path):
    N = 30
    g = torch.Generator().manual_seed(0)
    comp = {"image": torch.rand(N + 1, 8, generator=g)}
    comp["image"][0] = 0
    ctx = ModelContext(n_items=N, max_len=8, compressed=comp)
    model = build_model("sasrec", {"dim": 8, "layers": 1, "item_repr": "tuned", "modalities": ["image"]}, ctx)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, 7) for _ in range(40)]
    nt, nv = np.full(40, 5), np.ones(40, dtype=int)
    probe = ForgettingProbe(comp, n_pairs=400)
    Trainer(model, train_windows(seqs, nt, 8), TrainConfig(epochs=2, batch_size=8, lr=1e-2), tmp_path, seed=0,
            valid=eval_instances(seqs, nt, nv, "valid", 8), eval_cfg=EvalConfig(ks=[10]), epoch_callback=probe,
            live=True, progress=False).fit()
    tsv = tmp_path / "dvclive" / "plots" / "metrics" / "forgetting" / "image_E_M.tsv"
    rows = tsv.read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert all(-1 <= float(r.split("\t")[-1]) <= 1 for r in rows[1:])



def _forgetting_curves(seed, out, epochs=15):
    """SASRec with a tuned image table, alone and with CDL (the distill stage's teacher), same init and batches;
    a high learning rate makes the table drift within a few epochs on this tiny catalogue."""
    from modalrec.teacher.teacher import TeacherConfig, fit_teacher

    N = 50
    g = torch.Generator().manual_seed(seed)
    comp = {"image": torch.sigmoid(2 * torch.randn(N + 1, 16, generator=g))}
    comp["image"][0] = 0
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, N + 1, 8) for _ in range(2 * N)]
    nt = np.full(len(seqs), 8)
    teacher, _ = fit_teacher(comp, seqs, TeacherConfig(D=4, codes=8, pairs_cooccur=2000, pairs_random=2000, seed=seed),
                             progress=False)
    ctx = ModelContext(n_items=N, max_len=8, compressed=comp, teacher=teacher)
    bcfg = {"dim": 16, "layers": 1, "dropout": 0.0}
    curves = {}
    for kind in ("alone", "cdl"):
        torch.manual_seed(seed)
        if kind == "alone":
            model = build_model("sasrec", {**bcfg, "item_repr": "tuned", "modalities": ["image"]}, ctx)
        else:
            model = build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": bcfg, "modalities": ["image"],
                                         "weights": {"image": [1.0, 0.5]}}, ctx)
        res = Trainer(model, train_windows(seqs, nt, 8), TrainConfig(epochs=epochs, batch_size=32, lr=0.05,
                                                                      monitor=None),
                      out / f"{seed}_{kind}", seed=seed, epoch_callback=ForgettingProbe(comp, n_pairs=3000, seed=0),
                      live=False, progress=False).fit()
        curves[kind] = [row["forgetting/image_E_M"] for row in res.history]
    return curves


@pytest.mark.parametrize("seed", [0, 1])
def test_cdl_keeps_the_tuned_table_closer_to_m(seed, tmp_path):
    """The forgetting probe tells the two runs apart: without CDL the table's pair similarities drift far from m̃'s
    (Pearson ~0.2-0.4 after 15 epochs here), with CDL they stay much closer (~0.6-0.75). Over seeds 0-11 the
    smallest final gap was 0.22 (0.37 and 0.49 for the seeds tested; deterministic on CPU), so 0.15 is a safe margin."""
    c = _forgetting_curves(seed, tmp_path)
    assert len(c["alone"]) == len(c["cdl"]) == 15
    assert c["alone"][0] > 0.7 and c["cdl"][0] > 0.7  # both start close to m̃ ...
    assert c["alone"][-1] < c["alone"][0] - 0.3  # ... the table alone forgets ...
    assert c["cdl"][-1] > c["alone"][-1] + 0.15  # ... and CDL keeps it measurably closer
