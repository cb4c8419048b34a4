"""UniSRec's parametric whitening and MoE adaptor against hand computations."""

import pytest
import torch

from modalrec.errors import ParamError
from modalrec.models import ModelContext, build_model
from modalrec.models.unisrec import MoEAdaptor, PWLayer


def test_whitening_is_a_learned_centring_then_a_linear_map():
    torch.manual_seed(0)
    pw = PWLayer(3, 2).eval()
    with torch.no_grad():
        pw.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.tensor([[2.0, 0.0, 0.5]])
    W = pw.lin.weight.detach()
    torch.testing.assert_close(pw(x), ((x - torch.tensor([1.0, -2.0, 0.5])) @ W.t()))
    assert pw.lin.bias is None


def test_moe_adaptor_by_hand():
    torch.manual_seed(0)
    moe = MoEAdaptor(3, 4, 2).eval()
    with torch.no_grad():
        moe.w_gate.copy_(torch.randn(4, 3))
        for e in moe.experts:
            e.bias.copy_(torch.randn(4))
    x = torch.randn(5, 4)
    g = torch.softmax(x @ moe.w_gate, -1)
    want = sum(g[:, e:e + 1] * ((x - moe.experts[e].bias) @ moe.experts[e].lin.weight.t()) for e in range(3))
    torch.testing.assert_close(moe(x), want.detach())
    # at initialisation the gate is uniform: the mean of the experts
    fresh = MoEAdaptor(3, 4, 2).eval()
    torch.testing.assert_close(fresh.gates(x), torch.full((5, 3), 1 / 3))
    # in training the gate is noisy (and still a distribution)
    fresh.train()
    gn = fresh.gates(x)
    assert not torch.allclose(gn, torch.full((5, 3), 1 / 3)) and torch.allclose(gn.sum(-1), torch.ones(5))


def test_item_table_and_cosine_scores():
    g = torch.Generator().manual_seed(0)
    feats = {"text": torch.randn(7, 5, generator=g) * 10, "image": torch.randn(7, 3, generator=g)}
    feats["image"][4] = 0  # no image: that modality adds nothing to item 4
    for f in feats.values():
        f[0] = 0
    ctx = ModelContext(6, 4, features=feats)
    torch.manual_seed(0)
    model = build_model("unisrec", {"dim": 4, "heads": 1, "n_experts": 2}, ctx).eval()
    # features are divided by their mean norm
    has = feats["text"].abs().sum(1) > 0
    torch.testing.assert_close(model.feat_text, feats["text"] / feats["text"][has].norm(dim=1).mean())
    t = model.table()
    want4 = model.id_emb.weight[4] + model.adaptors["text"](model.feat_text[4:5])[0]
    torch.testing.assert_close(t[4], want4)
    assert torch.all(t[0] == 0)
    s = model.score_all(torch.tensor([[1, 2, 3]]))
    h = model.encode(torch.tensor([[1, 2, 3]]), t)[0, -1]
    cos = torch.nn.functional.cosine_similarity(h[None], t[1:], dim=-1) / 0.07
    torch.testing.assert_close(s[0, 1:], cos, atol=1e-5, rtol=1e-5)
    # inductive: no ID table in the item vectors
    ind = build_model("unisrec", {"dim": 4, "heads": 1, "use_id": False, "modalities": ["text"]}, ctx)
    assert torch.all(ind.id_emb.weight == 0) and not ind.id_emb.weight.requires_grad
    with pytest.raises(ParamError, match="models.unisrec.modalities"):
        build_model("unisrec", {"modalities": ["audio"]}, ctx)
