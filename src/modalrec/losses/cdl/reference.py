"""The readable definitions the tests compare :class:`~modalrec.losses.cdl.CDL`'s computations with: the dense
``[B, U, U]`` forms of the pairs and both holistic losses (:func:`pair_mask`, :func:`upper_pairs`,
:func:`pairwise_xi`, :func:`frobenius_loss`, :func:`soft_match_loss`) and the plain-autograd forms of the two
hand-written nodes (:func:`soft_match_pairs_reference`, :func:`code_head_nll_reference`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functions import segment_softmax
from .pairs import SequencePairs


def pairwise_xi(z: Tensor, xi: str) -> Tensor:
    """``[B, U, U]`` scores of every pair of rows of ``z [B, U, d]`` (same definitions as the teacher:
    cosine and dot products, raw Euclidean and Manhattan distances)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
        return z @ z.transpose(1, 2)
    if xi == "dot":
        return z @ z.transpose(1, 2)
    return torch.cdist(z, z, p=2.0 if xi == "euclidean" else 1.0)


def pair_mask(items: Tensor, diagonal: bool = True) -> Tensor:
    """``[B, U, U]`` True for the ordered pairs the losses supervise (both items real; i = j iff ``diagonal``)."""
    valid = items > 0
    mask = valid[:, :, None] & valid[:, None, :]
    if not diagonal:
        mask &= ~torch.eye(items.shape[1], dtype=torch.bool, device=items.device)
    return mask


def upper_pairs(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices ``(b, i, j)`` of the valid pairs with i ≤ j and their weight (2 for i < j, 1 on the diagonal)."""
    tri = torch.ones(mask.shape[1], mask.shape[2], dtype=torch.bool, device=mask.device).triu()
    b, i, j = (mask & tri).nonzero(as_tuple=True)
    w = torch.where(i == j, 1.0, 2.0).to(torch.float32)
    return b, i, j, w


def frobenius_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Released code: ``mean_b sqrt(Σ_ij mask (r̂ − r)² / τ² + 1e-8)`` over sequences with at least one pair
    (dense ``[B, U, U]`` form; :class:`CDL` uses :func:`frobenius_pairs`, the same value on pair lists)."""
    d = ((r_hat - r) / tau) * mask
    per_seq = torch.sqrt(d.pow(2).sum((1, 2)) + 1e-8)
    has = mask.flatten(1).any(1)
    return per_seq[has].mean() if has.any() else r_hat.sum() * 0


def soft_match_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Paper Eq. 3: row-wise temperature-τ softmax over the valid j of each row, squared error averaged over pairs
    (dense ``[B, U, U]`` form; :class:`CDL` uses :func:`soft_match_pairs`)."""
    neg = torch.finfo(r_hat.dtype).min

    def soft(x: Tensor) -> Tensor:
        return torch.softmax((x / tau).masked_fill(~mask, neg), dim=-1) * mask

    n = mask.sum()
    return ((soft(r_hat) - soft(r)).pow(2) * mask).sum() / n.clamp(min=1)


def soft_match_pairs_reference(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`soft_match_pairs` with plain autograd operations (the readable definition the tests compare with)."""
    both = torch.stack([r_hat, r.expand_as(r_hat)])
    x = torch.cat([both, both.index_select(both.dim() - 1, pairs.off)], -1) / tau
    p = segment_softmax(x, pairs.rows, pairs.items.shape[0])
    return (p[0] - p[1]).pow(2).sum(-1) / max(x.shape[-1], 1)


def code_head_nll_reference(E: Tensor, ia: Tensor, ib: Tensor, heads: list[nn.Module], t_off: Tensor,
                            t_diag: Tensor, w_off: float = 2.0) -> Tensor:
    """:func:`code_head_nll` with plain autograd operations (the readable definition)."""
    z = torch.stack([h((e[ia] - e[ib]).abs()) for e, h in zip(E, heads)])
    z0 = torch.stack([h(E.new_zeros(E.shape[-1])) for h in heads])  # [M, x]
    dtype = torch.promote_types(z.dtype, torch.float32)  # half-precision logits: softmax in float32
    logp, logp0 = F.log_softmax(z.to(dtype), dim=-1), F.log_softmax(z0.to(dtype), dim=-1)
    return -w_off * logp.gather(-1, t_off.unsqueeze(-1)).sum((1, 2)) - logp0.gather(1, t_diag).sum(1)


def sigmoid_match_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Paper Eq. 3 with σ the logistic function of each pair: ``(1/#pairs) Σ_ij (σ(r̂_ij/τ) − σ(r_ij/τ))²`` over the
    valid ordered pairs of the batch (dense ``[B, U, U]`` form; :class:`CDL` uses :func:`sigmoid_match_pairs`)."""
    d = (torch.sigmoid(r_hat / tau) - torch.sigmoid(r / tau)).pow(2) * mask
    return d.sum() / mask.sum().clamp(min=1)
