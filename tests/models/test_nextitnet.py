"""NextItNet's dilated causal convolutions by hand: what each output position reads, and that left padding is
invisible."""

import pytest
import torch
from torch import nn

from modalrec.errors import ParamError
from modalrec.models import ModelContext, build_model
from modalrec.models.nextitnet import NextItNetEncoder, ResidualBlock, causal_conv


def test_causal_conv_by_hand():
    """kernel 3, dilation 2 on one channel: y[t] = w0 x[t-4] + w1 x[t-2] + w2 x[t] + b, zeros before the start."""
    conv = nn.Conv1d(1, 1, 3, dilation=2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
        conv.bias.fill_(0.5)
    x = torch.arange(1.0, 7.0).view(1, 6, 1)  # 1..6
    y = causal_conv(conv, x)[0, :, 0].tolist()
    want = [100 * 1 + 0.5, 100 * 2 + 0.5, 100 * 3 + 10 * 1 + 0.5, 100 * 4 + 10 * 2 + 0.5,
            100 * 5 + 10 * 3 + 1 + 0.5, 100 * 6 + 10 * 4 + 2 + 0.5]
    assert y == pytest.approx(want)


def _reads(enc: NextItNetEncoder, L: int, t: int) -> list[int]:
    """Input positions whose change moves the output at position t (from the Jacobian of the encoder)."""
    torch.manual_seed(0)
    x = torch.randn(1, L, 8, requires_grad=True)
    out = enc(x, torch.zeros(1, L, dtype=torch.bool))
    out[0, t].sum().backward()
    return [s for s in range(L) if x.grad[0, s].abs().sum() > 0]


def test_receptive_field_by_hand():
    # one block of kernel 2, dilation 1: conv1 reads t, t-1; conv2 (dilation 2) reads t, t-2 of conv1's output,
    # i.e. inputs t-3..t. With dilations [1, 2] (two blocks): reach 3 + 6 = 9.
    one = NextItNetEncoder(8, kernel_size=2, dilations=[1], blocks=1)
    assert one.reach == 3 and _reads(one, 12, 8) == [5, 6, 7, 8]
    two = NextItNetEncoder(8, kernel_size=2, dilations=[1, 2], blocks=1)
    assert [b.conv1.dilation[0] for b in two.blocks] == [1, 2] and [b.conv2.dilation[0] for b in two.blocks] == [2, 4]
    assert two.reach == 9 and _reads(two, 14, 12) == list(range(3, 13))  # never the future, at most 9 back
    assert _reads(two, 14, 2) == [0, 1, 2]
    # RecBole's default: dilations [1, 4] x 5 blocks, kernel 3: 10 blocks, reach 5 * (2*3*1 + 2*3*4) = 150
    default = NextItNetEncoder(8)
    assert len(default.blocks) == 10 and default.reach == 150
    assert isinstance(default.blocks[0], ResidualBlock)


def test_left_padding_is_zero_padding():
    """A history padded on the left gives the outputs of the unpadded history at its positions (padding zeroed
    after every convolution), also in the scoring path."""
    torch.manual_seed(1)
    enc = NextItNetEncoder(8, kernel_size=3, dilations=[1, 2], blocks=2)
    x = torch.randn(1, 4, 8)
    padded = torch.cat([torch.randn(1, 3, 8), x], dim=1)  # garbage at padding positions is ignored
    pad = torch.tensor([[True] * 3 + [False] * 4])
    full = enc(x, torch.zeros(1, 4, dtype=torch.bool))
    torch.testing.assert_close(enc(padded, pad)[:, 3:], full)
    torch.testing.assert_close(enc(padded, pad, last_only=True), full[:, -1:])


def test_model_scores_and_options():
    ctx = ModelContext(n_items=30, max_len=8)
    m = build_model("nextitnet", {"dim": 16, "dilations": [1, 2], "blocks": 1}, ctx).eval()
    s = m.score_all(torch.tensor([[0, 0, 4, 5, 6]]))
    assert s.shape == (1, 31) and torch.isinf(s[0, 0])
    torch.testing.assert_close(s, m.score_all(torch.tensor([[4, 5, 6]])))
    with pytest.raises(ParamError, match="models.nextitnet.dilations"):
        build_model("nextitnet", {"dilations": []}, ctx)
    with pytest.raises(ParamError, match="models.nextitnet.blocks"):
        build_model("nextitnet", {"blocks": 0}, ctx)
