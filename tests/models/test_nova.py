"""NOVA's non-invasive attention against a hand computation."""

import math

import pytest
import torch

from modalrec.models.nova import NOVALayer, attention_mask


def lin(layer, x):
    return x @ layer.weight.t() + layer.bias


@pytest.mark.parametrize("fusion", ["sum", "gate"])
def test_nova_layer_by_hand(fusion):
    torch.manual_seed(0)
    D, L = 4, 3
    layer = NOVALayer(D, 1, 2, fusion, 8, 0.0, 0.0).eval()
    x = torch.randn(1, L, D)
    side = [torch.randn(1, L, D), torch.randn(1, L, D)]
    with torch.no_grad():
        got = layer(x, side, attention_mask(torch.zeros(1, L, dtype=torch.bool)))[0]
        src = [x[0], side[0][0], side[1][0]]
        if fusion == "sum":
            f = src[0] + src[1] + src[2]
        else:
            g = torch.softmax(lin(layer.fuse.gate, torch.cat(src, -1)), -1)
            f = sum(g[:, k:k + 1] * src[k] for k in range(3))
        q, k, v = lin(layer.query, f), lin(layer.key, f), lin(layer.value, x[0])  # V from the item states only
        for t in range(L):
            a = torch.softmax(q[t] @ k[:t + 1].t() / math.sqrt(D), 0)
            y = layer.ln1(x[0, t] + lin(layer.dense, a @ v[:t + 1]))
            want = layer.ln2(y + layer.ffn(y))
            torch.testing.assert_close(got[t], want, atol=1e-5, rtol=1e-5)


def test_side_information_never_enters_the_values():
    torch.manual_seed(0)
    layer = NOVALayer(4, 2, 1, "gate", 8, 0.0, 0.0).eval()
    x = torch.randn(1, 3, 4)
    mask = attention_mask(torch.zeros(1, 3, dtype=torch.bool))
    a = layer(x, [torch.randn(1, 3, 4)], mask)
    b = layer(x, [torch.randn(1, 3, 4)], mask)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # one visible key: the weights are 1, the output side-free
    assert not torch.allclose(a[:, 2], b[:, 2])  # later positions: the side information moves the weights
