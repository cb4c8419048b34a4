"""DIF-SR's decoupled attention against a hand computation."""

import math

import pytest
import torch

from modalrec.errors import ParamError
from modalrec.models import ModelContext, build_model
from modalrec.models.difsr import DIFAttention, attention_mask


def lin(layer, x):
    return x @ layer.weight.t() + layer.bias


@pytest.mark.parametrize("fusion", ["sum", "gate"])
def test_decoupled_attention_by_hand(fusion):
    torch.manual_seed(0)
    D, L, M = 4, 3, 5
    att = DIFAttention(D, 1, 2, M, fusion, 0.0, 0.0).eval()
    x, pos = torch.randn(1, L, D), torch.randn(L, D)
    side = [torch.randn(1, L, D), torch.randn(1, L, D)]
    pad = torch.tensor([[True, False, False]])  # position 0 is padding
    with torch.no_grad():
        got = att(x, side, pos, attention_mask(pad), pad)[0]
        maps = [lin(att.query_s[i], side[i][0]) @ lin(att.key_s[i], side[i][0]).t() for i in range(2)]
        maps += [lin(att.query, x[0]) @ lin(att.key, x[0]).t(), lin(att.query_p, pos) @ lin(att.key_p, pos).t()]
        for t in range(1, L):  # the real queries
            keys = list(range(1, t + 1))  # causal, no padding key
            if fusion == "sum":
                row = sum(m[t] for m in maps)
            else:  # each source's row over max_len keys (left-padded, padding keys 0), softmax over sources
                rows = []
                for m in maps:
                    r = torch.zeros(M)
                    r[M - L + 1:] = m[t, 1:]
                    rows.append(r)
                e = torch.stack([att.gate.projection(r).squeeze() for r in rows])
                w = torch.softmax(e, 0)
                row = sum(w[s] * rows[s] for s in range(4))[M - L:]
            a = torch.softmax(row[keys] / math.sqrt(D), 0)
            ctx = sum(a[i] * lin(att.value, x[0, k]) for i, k in enumerate(keys))
            want = att.ln(x[0, t] + lin(att.dense, ctx))  # values from the item states only
            torch.testing.assert_close(got[t], want, atol=1e-5, rtol=1e-5)


def test_values_ignore_side_information():
    """Side information moves the attention weights, never the values: with one visible key (the first position)
    the output does not depend on the side vectors at all."""
    torch.manual_seed(0)
    att = DIFAttention(4, 2, 1, 4, "sum", 0.0, 0.0).eval()
    x, pos = torch.randn(1, 2, 4), torch.randn(2, 4)
    pad = torch.tensor([[False, False]])
    a = att(x, [torch.randn(1, 2, 4)], pos, attention_mask(pad), pad)
    b = att(x, [torch.randn(1, 2, 4)], pos, attention_mask(pad), pad)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_aap_loss_and_options():
    g = torch.Generator().manual_seed(0)
    feats = {"text": torch.randn(9, 6, generator=g)}
    feats["text"][0] = 0
    ctx = ModelContext(8, 4, features=feats)
    from modalrec.models.base import Batch
    b = Batch(torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2, 3, 4]]), torch.tensor([0]))
    torch.manual_seed(0)
    off = build_model("difsr", {"dim": 8, "modalities": ["text"]}, ctx)
    torch.manual_seed(0)
    on = build_model("difsr", {"dim": 8, "modalities": ["text"], "aap_weight": 2.0}, ctx)
    assert torch.is_tensor(off.loss(b))
    out = on.loss(b)
    assert set(out) == {"loss", "rec", "aap_text"} and out["aap_text"] > 0
    torch.testing.assert_close(out["loss"], out["rec"] + 2.0 * out["aap_text"])
    with pytest.raises(ParamError, match="models.difsr.fusion"):
        build_model("difsr", {"fusion": "concat", "modalities": ["text"]}, ctx)
