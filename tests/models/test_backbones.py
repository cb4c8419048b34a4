"""One-epoch smoke tests for every backbone x item representation x fusion, plus contract properties."""

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_batches, train_windows
from modalrec.errors import ParamError
from modalrec.models import ModelContext, available_models, build_model

N, MAXLEN = 40, 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(4, 14))) for _ in range(30)]
    nt = np.array([len(s) - 2 for s in seqs])
    nv = np.ones(len(seqs), dtype=int)
    g = torch.Generator().manual_seed(0)
    feats = {"text": torch.randn(N + 1, 12, generator=g), "image": torch.randn(N + 1, 20, generator=g)}
    feats["image"][5] = 0  # an item without an image
    comp = {m: torch.rand(N + 1, 128, generator=g) for m in ("text", "image")}
    ctx = ModelContext(n_items=N, max_len=MAXLEN, features=feats, compressed=comp)
    return seqs, nt, nv, ctx


def test_registry_lists_backbones():
    assert {"gru4rec", "sasrec", "nextitnet"} <= set(available_models())


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec", "nextitnet"])
@pytest.mark.parametrize("repr_, modalities, fusion", [
    ("id", ["image", "text"], "sum"),
    ("frozen", ["image", "text"], "sum"), ("frozen", ["text"], "concat"), ("frozen", ["image"], "gate"),
    ("tuned", ["image", "text"], "sum"), ("tuned", ["image", "text"], "concat"), ("tuned", ["text"], "gate"),
])
def test_one_epoch_smoke(data, arch, repr_, modalities, fusion):
    seqs, nt, nv, ctx = data
    torch.manual_seed(0)
    model = build_model(arch, {"item_repr": repr_, "modalities": modalities, "fusion": fusion, "dim": 16}, ctx)
    opt = torch.optim.Adam([g for g in model.param_groups(1e-2)])
    w = train_windows(seqs, nt, MAXLEN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for b in train_batches(w, 8, seed=0, epoch=1):
        loss = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    inst = eval_instances(seqs, nt, nv, "test", MAXLEN)
    _, inp, _ = next(inst.batches(64))
    s = model.score_all(inp)
    assert s.shape == (inp.shape[0], N + 1) and torch.isinf(s[:, 0]).all() and torch.isfinite(s[:, 1:]).all()
    table = model.item_representations()
    assert table.shape[0] == N + 1 and torch.all(table[0] == 0)
    # left padding is invisible: the same history with more padding gets the same scores
    short = torch.tensor([[3, 7, 9]])
    padded = torch.tensor([[0, 0, 0, 3, 7, 9]])
    torch.testing.assert_close(model.score_all(short), model.score_all(padded), atol=1e-5, rtol=1e-5)
    # hooks of the contract
    assert model.id_table().weight.shape == (N + 1, 16)
    tables = model.modality_tables()
    if repr_ == "tuned":
        assert set(tables) == set(modalities)
        for m, t in tables.items():  # initialised from m~ and trained
            assert t.weight.requires_grad and t.weight.shape == (N + 1, 128)
        assert "modality_tables" in {g["name"] for g in model.param_groups(1e-3)}
    else:
        assert tables == {}
    names = [g["name"] for g in model.param_groups(1e-3)]
    n_params = sum(len(g["params"]) for g in model.param_groups(1e-3))
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad) and len(set(names)) == len(names)


def test_tuned_tables_start_from_compressed(data):
    _, _, _, ctx = data
    model = build_model("sasrec", {"item_repr": "tuned", "modalities": ["text"]}, ctx)
    w = model.modality_tables()["text"].weight
    torch.testing.assert_close(w[1:], ctx.compressed["text"][1:])
    assert torch.all(w[0] == 0)


def test_frozen_features_stay_fixed_and_out_of_checkpoint(data):
    _, _, _, ctx = data
    model = build_model("sasrec", {"item_repr": "frozen"}, ctx)
    assert not any("feat_" in k for k in model.state_dict())
    assert all(p.data_ptr() != model.items.feat_text.data_ptr() for p in model.parameters())


def test_bad_options_name_the_parameter(data):
    _, _, _, ctx = data
    with pytest.raises(ParamError, match="models.sasrec.item_repr"):
        build_model("sasrec", {"item_repr": "clip"}, ctx)
    with pytest.raises(ParamError, match="models.sasrec.heads_typo"):
        build_model("sasrec", {"heads_typo": 2}, ctx)
    no_feat = ModelContext(n_items=N, max_len=MAXLEN)
    with pytest.raises(ParamError, match="modalities"):
        build_model("gru4rec", {"item_repr": "frozen"}, no_feat)
    with pytest.raises(ParamError, match="models.x.arch"):
        build_model("x", {}, ctx, arch="nonexistent")


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_last_position_scoring_matches_full_forward(data, norm_first):
    _, _, _, ctx = data
    torch.manual_seed(0)
    model = build_model("sasrec", {"dim": 16, "heads": 2, "norm_first": norm_first}, ctx).eval()
    ids = torch.tensor([[0, 0, 4, 9, 2, 7], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 8]])
    full = model.encode(ids, model.items.table())[:, -1]
    torch.testing.assert_close(model.user_vectors(ids), full, atol=1e-5, rtol=1e-5)
