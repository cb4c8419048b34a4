"""Inverted dropout that draws only the dropped positions, shared by ODMT's fast CPU path and the session-graph
backbones.

``nn.Dropout`` on CPU draws one Bernoulli number per element (a fifth of an ODMT step, a quarter of an MMSR step).
:func:`dropped_positions` draws the gaps between dropped elements instead (geometric, about ``p·n`` numbers), which
has the same distribution: every element is dropped independently with probability ``p``. It is another random
stream than ``nn.Dropout``'s, so a seed gives other masks than before (results move within seed noise), but the same
seed gives the same masks run after run. On other devices :func:`dropout` is ``F.dropout`` (a fused kernel there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def dropped_positions(n: int, p: float, device: torch.device) -> Tensor:
    """Sorted flat indices of the dropped elements of an ``n``-element tensor, each element independently with
    probability ``p`` (as ``nn.Dropout`` drops them), sampled as the gaps between dropped elements: geometric,
    ``1 + floor(log(1 - u) / log(1 - p))`` for uniform ``u`` (float64; twice as fast as ``geometric_``)."""
    mean = n * p
    k = int(mean + 6.0 * math.sqrt(mean) + 16)  # enough gaps to pass n almost always; more are drawn when not
    pos = None
    while pos is None or int(pos[-1]) < n:
        u = torch.rand(k, dtype=torch.float64, device=device)
        more = u.neg_().log1p_().div_(math.log1p(-p)).floor_().add_(1).long().cumsum_(0)
        pos = more.sub_(1) if pos is None else torch.cat([pos, more.add_(pos[-1])])
    return pos[: int(torch.searchsorted(pos, n))]


class _Dropout(torch.autograd.Function):
    """``x · scale`` with the elements at ``pos`` (flat indices) zeroed, in the output and in its gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, pos: Tensor, scale: float) -> Tensor:
        y = x.contiguous() * scale
        y.view(-1).index_fill_(0, pos, 0.0)
        ctx.save_for_backward(pos)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (pos,) = ctx.saved_tensors
        g = grad.contiguous() * ctx.scale
        g.view(-1).index_fill_(0, pos, 0.0)
        return g, None, None


class _ReluDropout(torch.autograd.Function):
    """``relu(x)`` in place with the elements at ``pos`` zeroed and *not* rescaled (the caller folds ``1/(1-p)`` into
    the next Linear's weight): one pass forward, one backward (``relu'`` and the mask are both "output > 0"). ``x``
    must be a Linear's output, which nothing else reads."""

    @staticmethod
    def forward(ctx, x: Tensor, pos: Tensor) -> Tensor:
        y = x.relu_()
        y.view(-1).index_fill_(0, pos, 0.0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0.0), None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, distributed as ``F.dropout`` (on CPU the mask from :func:`dropped_positions`; elsewhere
    ``F.dropout`` itself, a fused kernel there)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return _Dropout.apply(x, dropped_positions(x.numel(), p, x.device), 1.0 / (1.0 - p))
