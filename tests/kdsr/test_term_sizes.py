"""Every CDL term's size against the recommendation loss (issue 18), at realistic sizes: long histories (64
windows of 50 items over 1,000 items, like MovieLens-100K's windows) and 128-d clustered sigmoid codes m̃ with the
real distill-stage teacher; plus hand computations of the new loss forms at those sizes."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.data.batching import Batch, train_batches, train_windows
from modalrec.losses.cdl import (CDL, CDLConfig, code_head_nll, code_head_nll_reference, frobenius_loss,
                                 frobenius_pairs, pair_mask, pairwise_xi, sequence_pairs, sigmoid_match_loss,
                                 sigmoid_match_pairs, unique_items)
from modalrec.models import ModelContext, build_model
from modalrec.params import load_params
from modalrec.runs import model_config, resolve_run
from modalrec.teacher.teacher import TeacherConfig, center_codes, fit_teacher

from .helpers import random_teacher

ROOT = Path(__file__).resolve().parents[2]
N, L, B, DIM = 1000, 50, 64, 128


def clustered_codes(n: int, d: int, seed: int, k: int = 20) -> torch.Tensor:
    """Sigmoid codes (as the compress stage's m̃) of items in k clusters: informative correlations."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 1.5
    x = torch.sigmoid(centres[torch.randint(0, k, (n + 1,), generator=g)] + 0.7 * torch.randn(n + 1, d, generator=g))
    x[0] = 0
    return x


@pytest.fixture(scope="module")
def realistic():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, 53) for _ in range(2 * B)]
    n_train = np.full(2 * B, 51)  # one training window of 51 items (50 inputs) per user
    windows = train_windows(seqs, n_train, L)
    comp = {"image": clustered_codes(N, DIM, 1), "text": clustered_codes(N, DIM, 2)}
    params = load_params(ROOT / "params.yaml")
    tcfg = TeacherConfig.from_params({**params["kdsr"], "pairs": {"cooccur": 20000, "random": 20000, "exact": False}})
    teacher, _ = fit_teacher(comp, [s[:t] for s, t in zip(seqs, n_train)], tcfg, progress=False)
    return params, windows, comp, teacher


def kdsr_model(params, comp, teacher, name="kdsr_sasrec", **over):
    spec = resolve_run(params, name)
    cfg = {**spec.cfg, **over}
    torch.manual_seed(0)
    return build_model("kdsr", cfg, ModelContext(n_items=N, max_len=L, compressed=comp, teacher=teacher))


def test_every_term_is_not_negligible_at_the_default_weights(realistic):
    """The `kdsr` preset (params.yaml) at initialisation: every weighted CDL term's gradient on the modality tables
    is at least 1% of the recommendation loss's (the flag of KDSR.term_sizes is off)."""
    params, windows, comp, teacher = realistic
    model = kdsr_model(params, comp, teacher)
    model.on_fit_start(windows)
    assert (model._probe.input_ids > 0).sum(1).float().mean() >= 45  # long histories
    model.eval()
    t = model.term_sizes()
    names = [f"{m}_{k}" for m in ("image", "text") for k in ("holistic", "code")]
    for name in names:
        assert np.isfinite(t[f"terms/{name}"]) and t[f"terms/{name}_grad"] > 0
        assert t[f"terms/{name}_grad_ratio"] >= 0.01, (name, t[f"terms/{name}_grad_ratio"])
        assert t[f"terms/{name}_negligible"] == 0.0
    assert t["terms/rec"] > 0 and t["terms/rec_grad"] > 0


def test_the_check_catches_the_inert_soft_match(realistic):
    """The old default (row-softmax soft match, pair means, uncentred raw E) is flagged: the check can fail."""
    params, windows, comp, teacher = realistic
    model = kdsr_model(params, comp, teacher, holistic_loss="soft_match", norm="pairs", represent="raw")
    model.on_fit_start(windows)
    model.eval()
    t = model.term_sizes()
    for m in ("image", "text"):
        assert t[f"terms/{m}_holistic_grad_ratio"] < 1e-3 and t[f"terms/{m}_holistic_negligible"] == 1.0


def test_term_sizes_leave_training_untouched(realistic):
    """The probe forks the random stream and restores CDL's mode: training after it is bitwise what it was."""
    params, windows, comp, teacher = realistic
    batch = next(iter(train_batches(windows, 16, 0, 1)))
    losses = []
    for probe in (False, True):
        model = kdsr_model(params, comp, teacher)
        model.on_fit_start(windows)
        model.train()
        torch.manual_seed(5)
        if probe:
            model.term_sizes()
        assert model.training and model.cdl.training
        losses.append(float(model.loss(batch)["loss"].detach()))
    assert losses[0] == losses[1]


def test_sigmoid_match_and_frobenius_match_the_dense_forms_at_realistic_sizes(realistic):
    _, windows, _, _ = realistic
    ids = torch.from_numpy(windows.items[:, :-1])
    items = unique_items(ids)
    mask = pair_mask(items)
    pairs = sequence_pairs(ids)
    g = torch.Generator().manual_seed(0)
    E = torch.randn(N + 1, 16, generator=g)
    M = torch.randn(N + 1, 16, generator=g)
    dense_hat, dense_r = pairwise_xi(E[items], "cos"), pairwise_xi(M[items], "cos")
    flat_hat = F.cosine_similarity(E[pairs.items[pairs.i]], E[pairs.items[pairs.j]], dim=-1, eps=1e-8)
    flat_r = F.cosine_similarity(M[pairs.items[pairs.i]], M[pairs.items[pairs.j]], dim=-1, eps=1e-8)
    assert pairs.i.shape[0] > 50_000  # ~60k pairs: MovieLens-100K-like
    for tau in (1.0, 1.5):
        got = sigmoid_match_pairs(flat_hat, flat_r, pairs, tau)
        assert float(got) == pytest.approx(float(sigmoid_match_loss(dense_hat, dense_r, mask, tau)), rel=1e-5)
        # by hand: the mean over ordered pairs of the squared difference of the logistic functions
        d = (torch.sigmoid(dense_hat / tau) - torch.sigmoid(dense_r / tau))[mask]
        assert float(got) == pytest.approx(float(d.pow(2).mean()), rel=1e-5)
        assert float(frobenius_pairs(flat_hat, flat_r, pairs, tau)) == pytest.approx(
            float(frobenius_loss(dense_hat, dense_r, mask, tau)), rel=1e-5)


def test_code_norm_rows_and_sampled_pairs_by_hand():
    torch.manual_seed(0)
    n, d, x = 300, 16, 7
    teacher = random_teacher(n, n_codes=x, seed=3)
    tables = {m: nn.Embedding(n + 1, d) for m in ("image", "text")}
    rng = np.random.default_rng(1)
    ids = torch.from_numpy(rng.integers(1, n + 1, (8, 40)))
    pairs = sequence_pairs(ids)
    K, n_off = pairs.items.shape[0], pairs.off.shape[0]
    out = {}
    for norm in ("pairs", "rows"):
        torch.manual_seed(1)
        cdl = CDL(CDLConfig(weights={"image": [0.0, 1.0], "text": [0.0, 1.0]}, norm=norm), teacher, dim=d)
        out[norm] = {m: float(v) for m, v in cdl(ids, tables).items() if m.startswith("cdl/")}
    n_ordered = 2 * n_off + pairs.diag.shape[0]
    for m in ("image", "text"):  # the same sum of cross-entropies over ordered pairs, divided by K or by #pairs
        assert out["rows"][f"cdl/{m}_code"] * K == pytest.approx(out["pairs"][f"cdl/{m}_code"] * n_ordered, rel=1e-5)
    # by hand, for one modality: Σ over ordered pairs of −log softmax(head(|e_i − e_j|))[c_ij] / K
    items = pairs.items
    e = tables["image"].weight[items]
    i, j = pairs.i, pairs.j
    c = teacher.C["image"][items[i], items[j]]
    ce = F.cross_entropy(cdl.code_head["image"]((e[i] - e[j]).abs()), c, reduction="none")
    w = torch.where(i == j, 1.0, 2.0)
    assert out["rows"]["cdl/image_code"] == pytest.approx(float((ce * w).sum().detach() / K), rel=1e-5)

    # sampled code-head pairs: weighted to estimate the full sum; the estimate is unbiased (mean over draws)
    heads = [cdl.code_head[m] for m in ("image", "text")]
    E = torch.stack([tables[m].weight[items] for m in ("image", "text")]).detach()
    t = torch.stack([teacher.C[m][items[i], items[j]] for m in ("image", "text")])
    full = code_head_nll(E, i[pairs.off], j[pairs.off], heads, t[:, pairs.off], t[:, pairs.diag])
    ref = code_head_nll_reference(E, i[pairs.off], j[pairs.off], heads, t[:, pairs.off], t[:, pairs.diag])
    assert torch.allclose(full, ref, rtol=1e-5)
    cfg = CDLConfig(weights={"image": [0.0, 1.0], "text": [0.0, 1.0]}, norm="rows", code_pairs=n_off // 10)
    torch.manual_seed(1)
    cdl_s = CDL(cfg, teacher, dim=d)
    cdl_s.load_state_dict(cdl.state_dict())
    cdl_s.train()
    draws = torch.tensor([[float(v) for k, v in cdl_s(ids, tables).items() if k.startswith("cdl/")]
                          for _ in range(200)])
    assert not torch.allclose(draws[0], draws[1])  # a new sample each step
    expect = torch.tensor([out["rows"]["cdl/image_code"], out["rows"]["cdl/text_code"]])
    assert torch.allclose(draws.mean(0), expect, rtol=0.01)
    cdl_s.eval()  # evaluation uses every pair
    assert float(cdl_s(ids, tables)["cdl/image_code"]) == pytest.approx(out["rows"]["cdl/image_code"], rel=1e-5)


def test_cdl_supervises_the_scored_representation(realistic):
    """represent: scored -> the holistic student's inputs are the standardised, projected rows the backbone scores
    with: its cosines by hand from proj((E − μ)/(σ√d)), and CDL's gradient reaches the projection."""
    params, windows, comp, teacher = realistic
    model = kdsr_model(params, comp, teacher, weights={"image": [1.0, 0.0], "text": [1.0, 0.0]})
    items = model.backbone.items
    ids = torch.from_numpy(windows.items[:4, :-1])
    pairs = sequence_pairs(ids)
    out = model.cdl(ids, model.modality_tables(), model._rows_fn, keep_terms=True)
    for m in ("image", "text"):
        x = (items.tables[m].weight - getattr(items, f"mu_{m}")) / getattr(items, f"sd_{m}")
        z = model.cdl.proj[m](items.proj[m](x) * getattr(items, f"has_{m}"))
        zi, zj = z[pairs.items[pairs.i]], z[pairs.items[pairs.j]]
        r_hat = F.cosine_similarity(zi, zj, dim=-1, eps=1e-8)
        r = teacher.holistic(pairs.items[pairs.i], pairs.items[pairs.j], m)
        assert float(out[f"cdl/{m}_holistic"]) == pytest.approx(float(frobenius_pairs(r_hat, r, pairs, 1.5).detach()),
                                                                rel=1e-4)
    out["cdl"].backward()
    assert items.proj["image"].weight.grad is not None and items.proj["image"].weight.grad.abs().sum() > 0


def test_the_centred_teacher(realistic):
    """kdsr.center: the teacher's holistic correlations are cosines of m̃ − mean (items with the modality); the
    uncentred cosines of sigmoid codes sit near 1, the centred ones spread."""
    params, windows, comp, teacher = realistic
    assert teacher.meta["center"] is True
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(1, N + 1, (2, 5000), generator=g)
    zc = center_codes(comp["image"])
    want = F.cosine_similarity(zc[i], zc[j], dim=-1)
    assert torch.allclose(teacher.holistic(i, j, "image"), want, atol=1e-5)
    raw = F.cosine_similarity(comp["image"][i], comp["image"][j], dim=-1)
    assert raw.mean() > 0.6 and raw.std() < 0.15  # near-uniform rows: little to distil
    assert want.std() > 2 * raw.std()
    assert torch.equal(center_codes(comp["image"])[0], torch.zeros(DIM))  # padding stays zero


def test_frozen_m_baseline_reads_exactly_m_tilde():
    g = torch.Generator().manual_seed(0)
    comp = {"image": clustered_codes(50, 16, 1), "text": clustered_codes(50, 16, 2)}
    feats = {m: torch.randn(51, 40, generator=g) for m in comp}
    ctx = ModelContext(n_items=50, max_len=10, compressed=comp, features=feats)
    params = load_params(ROOT / "params.yaml")
    spec = resolve_run(params, "sasrec_frozen_m")
    from modalrec.models.base import model_class
    from modalrec.runs import model_config

    assert model_class("sasrec_frozen_m", spec.arch).required_inputs(model_config(spec)) == [
        "compressed/image", "compressed/text"]
    model = build_model("sasrec", {**spec.cfg, "dim": 16}, ctx)
    items = model.items
    assert items.modality_tables() == {}  # nothing of m̃ is trainable
    for m in comp:
        assert torch.equal(items.modality_vectors(m), comp[m])
        assert not items.modality_vectors(m).requires_grad
    tuned = build_model("sasrec", {**resolve_run(params, "sasrec_tuned").cfg, "dim": 16}, ctx)
    for m in comp:  # the tuned baseline starts from the very same vectors
        assert torch.equal(tuned.items.tables[m].weight.detach(), comp[m])


def test_early_stopping_waits_for_the_warm_up():
    """A KDSR run with a linear warm-up never stops before async_epochs + patience; without a warm-up, and for
    baselines, min_epochs stays as the train section sets it."""
    from modalrec.train.kdsr_hooks import training_hooks

    params = load_params(ROOT / "params.yaml")
    params["kdsr"]["forgetting"]["enabled"] = False
    spec = resolve_run(params, "kdsr_sasrec")
    warm = model_config(spec).async_epochs
    training_hooks(spec, params)
    assert spec.train.min_epochs == warm + spec.train.patience
    params["kdsr"]["train"]["patience"] = 3
    spec = resolve_run(params, "kdsr_sasrec")
    training_hooks(spec, params)
    assert spec.train.min_epochs == warm + 3
    spec = resolve_run(params, "kdsr_no_at")  # no warm-up
    training_hooks(spec, params)
    assert spec.train.min_epochs == 0
    spec = resolve_run(params, "sasrec_tuned")
    training_hooks(spec, params)
    assert spec.train.min_epochs == 0


def test_the_family_callback_logs_the_term_sizes_per_epoch(tmp_path):
    """The trainer with KDSR's epoch callback (kdsr_hooks.TermSizes) logs terms/* every epoch, to history and dvclive."""
    from modalrec.data.batching import eval_instances
    from modalrec.evaluate.protocol import EvalConfig
    from modalrec.train.kdsr_hooks import TermSizes
    from modalrec.train.trainer import TrainConfig, Trainer

    n = 30
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.rand(n + 1, 8, generator=g) for m in ("image", "text")}
    ctx = ModelContext(n_items=n, max_len=8, compressed=comp, teacher=random_teacher(n, 4))
    torch.manual_seed(0)
    model = build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"dim": 8, "layers": 1}, "represent": "scored",
                                 "holistic_loss": "frobenius", "norm": "rows"}, ctx)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, n + 1, 7) for _ in range(40)]
    nt, nv = np.full(40, 5), np.ones(40, dtype=int)
    res = Trainer(model, train_windows(seqs, nt, 8), TrainConfig(epochs=2, batch_size=8, lr=1e-2), tmp_path, seed=0,
                  valid=eval_instances(seqs, nt, nv, "valid", 8), eval_cfg=EvalConfig(ks=[10]),
                  epoch_callback=TermSizes(None), live=True, progress=False).fit()
    for row in res.history:
        for m in ("image", "text"):
            for k in ("holistic", "code"):
                assert row[f"terms/{m}_{k}_grad_ratio"] > 0 and row[f"terms/{m}_{k}_negligible"] in (0.0, 1.0)
    tsv = tmp_path / "dvclive" / "plots" / "metrics" / "terms" / "image_code_grad_ratio.tsv"
    assert len(tsv.read_text().strip().splitlines()) == 3
