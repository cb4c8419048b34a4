"""FDSA's feature-level attention against a hand computation."""

import torch

from modalrec.models import ModelContext, build_model
from modalrec.models.fdsa import FeatureAttention


def test_feature_attention_by_hand():
    torch.manual_seed(0)
    att = FeatureAttention(3)
    feats = torch.randn(2, 2, 3)  # two items, two modalities each
    present = torch.tensor([[True, True], [False, True]])
    with torch.no_grad():
        out, w = att(feats, present)
    lin1, lin2 = att.projection[0], att.projection[2]
    for i in range(2):
        e = [float(lin2(torch.relu(lin1(feats[i, m]))).detach()) for m in range(2)]
        if present[i].all():
            z = torch.tensor(e).exp()
            want_w = z / z.sum()
        else:  # the missing modality gets no weight: the other one is the item's feature
            want_w = torch.tensor([0.0, 1.0])
        torch.testing.assert_close(w[i], want_w)
        torch.testing.assert_close(out[i], want_w[0] * feats[i, 0] + want_w[1] * feats[i, 1])
    none, w0 = att(feats[:1], torch.tensor([[False, False]]))
    assert torch.all(none == 0) and torch.all(w0 == 0)


def test_feature_stream_sees_the_features():
    """Changing one item's feature changes the scores of histories containing it, and only those."""
    g = torch.Generator().manual_seed(0)
    feats = {"text": torch.randn(11, 6, generator=g)}
    feats["text"][0] = 0
    torch.manual_seed(0)
    model = build_model("fdsa", {"dim": 8, "heads": 2, "modalities": ["text"]}, ModelContext(10, 5, features=feats))
    model.eval()
    hist = torch.tensor([[1, 2, 3], [4, 5, 6]])
    before = model.score_all(hist)
    model.items.feat_text[2] += 5.0
    after = model.score_all(hist)
    assert not torch.allclose(before[0], after[0]) and torch.allclose(before[1], after[1])
