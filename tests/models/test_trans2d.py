"""Trans2D's 2D attention against a hand computation (explicit loops over positions and attributes)."""

import math

import torch

from modalrec.models.trans2d import Attention2D, Linear2D


def test_linear2d_is_one_map_per_attribute():
    torch.manual_seed(0)
    lin = Linear2D(2, 3, 4)
    x = torch.randn(5, 2, 3)
    want = torch.stack([x[:, c] @ lin.weight[c] + lin.bias[c] for c in range(2)], 1)
    torch.testing.assert_close(lin(x), want)


def test_attention2d_by_hand():
    torch.manual_seed(0)
    C, d, L = 2, 3, 3
    att = Attention2D(C, d, 1, 0.0).eval()
    with torch.no_grad():
        att.alpha.copy_(torch.tensor([1.0, 0.5, -0.7]))
    x = torch.randn(1, L, C, d)
    keep = torch.tensor([[0.0, 1.0, 1.0]])  # position 0 is padding
    mask = torch.tensor([[[True, False, False], [False, True, False], [False, True, True]]])
    with torch.no_grad():
        got = att(x, mask, keep)[0]
        q, k, v = att.query(x)[0], att.key(x)[0], att.value(x)[0]  # [L, C, d]
        for i in (1, 2):
            for a in range(C):
                keys = [(j, b) for j in range(L) if mask[0, i, j] for b in range(C)]
                s = []
                for j, b in keys:
                    full = q[i, a] @ k[j, b]
                    feat = sum(q[p, a] @ k[p, b] for p in range(1, i + 1))  # real positions p <= i
                    time = sum(q[i, c] @ k[j, c] for c in range(C))
                    s.append((1.0 * full + 0.5 * feat - 0.7 * time) / math.sqrt(d))
                w = torch.softmax(torch.stack(s), 0)
                want = sum(w[n] * v[j, b] for n, (j, b) in enumerate(keys))
                torch.testing.assert_close(got[i, a], want, atol=1e-5, rtol=1e-5)
