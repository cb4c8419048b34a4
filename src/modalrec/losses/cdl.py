"""Correlation Distillation Learning (KDSR §3.2, Eq. 2-5): the student side of KDSR, for any backbone.

The teacher (:mod:`modalrec.teacher.teacher`) knows, for any pair of items, the holistic correlation
``r_ij = ξ(m̃_i, m̃_j)`` of their AE codes and the dissected correlation code ``c_ij`` (the nearest of x codewords of
the D per-part correlations). The student makes the *trainable* modality tables ``E`` (``model.modality_tables()``)
keep those correlations while the recommender fine-tunes them:

- holistic: ``r̂_ij = ξ(g_φ(e_i), g_φ(e_j))`` against ``r_ij``, g_φ one Linear (``proj_layers: 2`` keeps the released
  code's two stacked Linear layers). Two loss forms, because paper and code differ (paper-notes §4.1 K2):

  * ``frobenius`` (released code): per sequence ``sqrt(Σ_valid (r̂_ij − r_ij)² / τ² + 1e-8)``, averaged over the
    batch's sequences. τ is only a scale here.
  * ``soft_match`` (the paper's Eq. 3 read literally): a temperature-τ softmax over j of each row (within the
    sequence's valid pairs) for teacher and student, then the squared error averaged over valid pairs.
- dissected: ``p = W_out(ReLU(W_c |e_i − e_j|))`` (x logits) trained with cross-entropy against ``c_ij``, averaged
  over valid pairs; it reads the raw trainable embeddings (no g_φ), as in the code.

**Which pairs** (K5): all ordered pairs of the *unique* items of each training sequence (padding masked), with the
diagonal i = j included as the released code does (``diagonal: false`` drops it). Never N×N: one sort of the batch
gives every sequence's unique items as one flat list (:func:`sequence_pairs`), and the losses work on the list of
pairs i ≤ j of the same sequence, O(Σ_b U_b²) with U_b ≤ the batch's longest sequence. The teacher's correlations
are symmetric, so only pairs i ≤ j are looked up and pushed through the code head, with weight 2 for i < j: exactly
the mean over ordered pairs at half the cost. A diagonal pair's code-head input ``|e_i − e_i|`` is 0, so its logits
are computed once; ``soft_match`` mirrors the i < j pairs to normalise each row. The dense ``[B, U, U]`` forms
(:func:`pair_mask`, :func:`frobenius_loss`, :func:`soft_match_loss`) stay as the readable reference the tests
compare with.

**Cost** (``benchmarks/kdsr.py``, docs/kdsr.md): on CPU, CDL's time is the code head's six matrix products (~0.75
GFLOP a step at batch 64, near the CPU's float32 peak), passes over ``[M, P, d]`` temporaries and per-operation
overhead. So every modality is computed at once (stacked ``[M, ...]`` tensors, batched products, one pair cache);
each table is read once per batch, at the batch's K unique items, for both losses, and the gradients of the pairs'
ends are summed back onto those K rows (:func:`pair_row_sums`: one sparse incidence product on CPU), not scattered
into the table pair by pair; the student's holistic scores come from per-sequence Gram blocks (``[B, U, U]``
scalars, U ≤ the longest sequence: K rows moved instead of 2·P, the cos normalisation inside); and the code head and
the soft-match loss are single autograd nodes with hand-written backwards (:func:`code_head_nll`,
:func:`soft_match_pairs`). :func:`code_head_nll_reference`, :func:`soft_match_pairs_reference` and :func:`pair_xi`
are the plain-autograd definitions the tests compare values and gradients with.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..errors import ParamError
from ..teacher.correlation import XI, normalise_xi

HOLISTIC_LOSSES = ("frobenius", "soft_match")


@dataclass
class CDLConfig:
    modalities: list[str] = field(default_factory=lambda: ["image", "text"])
    # modality -> [λ_S (holistic), λ_C (code)]: paper Amazon (1, 0.5); ML-1M (0.5, 0.1); code parity img (4,4) txt (0.5,0.5)
    weights: dict[str, list[float]] = field(default_factory=lambda: {"image": [1.0, 0.5], "text": [1.0, 0.5]})
    tau: float = 1.5
    holistic_loss: str = "soft_match"  # soft_match (paper Eq. 3) | frobenius (released code)
    diagonal: bool = True  # include pairs (i, i) as the released code does
    proj_layers: int = 1  # g_φ: 1 Linear (paper) | 2 stacked Linear layers (released code)
    xi: str | None = None  # student's scoring function; None = the teacher's
    teacher_cache: int = 4_000_000  # item pairs whose teacher answers (all modalities) are kept across batches; 0 = off

    def validate(self, key: str = "models.<name>") -> None:
        if self.holistic_loss not in HOLISTIC_LOSSES:
            raise ParamError(f"{key}.holistic_loss", f"must be one of {HOLISTIC_LOSSES}, got {self.holistic_loss!r}")
        if not self.tau > 0:
            raise ParamError(f"{key}.tau", f"must be > 0, got {self.tau}")
        if self.proj_layers not in (1, 2):
            raise ParamError(f"{key}.proj_layers", f"must be 1 or 2, got {self.proj_layers}")
        if self.xi is not None:
            normalise_xi(self.xi, f"{key}.xi")
        if not isinstance(self.teacher_cache, int) or isinstance(self.teacher_cache, bool) or self.teacher_cache < 0:
            raise ParamError(f"{key}.teacher_cache", f"must be an integer >= 0, got {self.teacher_cache!r}")
        for m in self.modalities:
            w = self.weights.get(m)
            if w is None or len(w) != 2:
                raise ParamError(f"{key}.weights.{m}", "needs [holistic_weight, code_weight] for every modality")
            if min(float(v) for v in w) < 0:
                raise ParamError(f"{key}.weights.{m}", f"weights must be >= 0, got {w}")
        extra = sorted(set(self.weights) - set(self.modalities))
        if extra:
            raise ParamError(f"{key}.weights.{extra[0]}", f"not one of the modalities {self.modalities}")


def pairwise_xi(z: Tensor, xi: str) -> Tensor:
    """``[B, U, U]`` scores of every pair of rows of ``z [B, U, d]`` (same definitions as the teacher:
    cosine and dot products, raw Euclidean and Manhattan distances)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
        return z @ z.transpose(1, 2)
    if xi == "dot":
        return z @ z.transpose(1, 2)
    return torch.cdist(z, z, p=2.0 if xi == "euclidean" else 1.0)


def pair_xi(z: Tensor, i: Tensor, j: Tensor, xi: str) -> Tensor:
    """``[..., P]`` scores ξ(z_i, z_j) of the listed row pairs of ``z [..., K, d]`` (the definitions of
    :func:`pairwise_xi`; a distance of a row to itself is exactly 0, with gradient 0)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
    dim = z.dim() - 2  # (index_select: a much faster backward than z[..., i, :] on CPU)
    zi, zj = z.index_select(dim, i), z.index_select(dim, j)
    if xi in ("cos", "dot"):
        return (zi * zj).sum(-1)
    d = zi - zj
    return torch.linalg.vector_norm(d, ord=2 if xi == "euclidean" else 1, dim=-1)


def _sorted_unique(input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """One sort per batch: ``(s, keep)`` with ``s`` each row ascending and ``keep`` True at the first occurrence of
    every non-padding item of the row."""
    s, _ = input_ids.sort(dim=1)
    keep = s > 0
    keep[:, 1:] &= s[:, 1:] != s[:, :-1]
    return s, keep


def unique_items(input_ids: Tensor) -> Tensor:
    """``[B, U]`` the unique non-padding items of each row, ascending (as ``np.unique`` in the released code), left
    padded with 0; U = the largest number of unique items in the batch (at least 1)."""
    s, keep = _sorted_unique(input_ids)
    B = s.shape[0]
    counts = keep.sum(1)
    U = max(int(counts.max()), 1) if s.numel() else 1
    out = s.new_zeros((B, U))
    if B:  # slot of a kept item: U - (number of kept items at or after it in its row)
        after = keep.flip(1).cumsum(1).flip(1)
        out[keep.nonzero(as_tuple=True)[0], (U - after)[keep]] = s[keep]
    return out


@dataclass
class SequencePairs:
    """The supervised pairs of a batch as flat lists (O(#pairs) memory).

    ``items [K]``: every sequence's unique items, ascending within a sequence, sequences in batch order;
    ``seq [K]``: the sequence (batch row) of each; ``i``, ``j`` ``[P]``: positions in ``items`` of the pairs with
    i ≤ j (i < j without the diagonal) of the same sequence, ordered by (sequence, i, j) like ``upper_pairs``."""

    items: Tensor
    seq: Tensor
    i: Tensor
    j: Tensor
    n_seq: int
    pos: Tensor  # [K] position of each item within its sequence's unique items
    width: int  # U: the most unique items of a sequence in the batch (0 without items)

    # derived index lists, computed once per batch and shared by every modality and loss
    @cached_property
    def offdiag(self) -> Tensor:
        return self.i != self.j

    @cached_property
    def off(self) -> Tensor:
        """Positions (in the pair lists) of the i < j pairs."""
        return self.offdiag.nonzero().squeeze(1)

    @cached_property
    def diag(self) -> Tensor:
        """Positions of the diagonal pairs i = j."""
        return (~self.offdiag).nonzero().squeeze(1)

    @cached_property
    def weight(self) -> Tensor:
        """How many ordered pairs each listed pair stands for: 2 for i < j, 1 on the diagonal."""
        return self.offdiag.float() + 1

    @cached_property
    def pair_seq(self) -> Tensor:
        return self.seq.index_select(0, self.i)

    @cached_property
    def has_pairs(self) -> Tensor:
        """``[n_seq]`` True for the sequences with at least one pair."""
        has = torch.zeros(self.n_seq, dtype=torch.bool, device=self.i.device)
        has[self.pair_seq] = True
        return has

    @cached_property
    def slot(self) -> Tensor:
        """``[K]`` row of each item in a ``[n_seq * U]`` padded layout (sequence b's items at rows b·U ...)."""
        return self.seq * self.width + self.pos

    @cached_property
    def flat(self) -> Tensor:
        """``[P]`` position of each pair in a flattened ``[n_seq, U, U]`` block of per-sequence scores."""
        return self.slot.index_select(0, self.i) * self.width + self.pos.index_select(0, self.j)

    @cached_property
    def rows(self) -> Tensor:
        """The row ``i`` of every *ordered* pair, the listed ones first, then the mirrored i < j pairs."""
        return torch.cat([self.i, self.j.index_select(0, self.off)])


def sequence_pairs(input_ids: Tensor, diagonal: bool = True) -> SequencePairs:
    """The pairs the losses supervise, from one sort of ``input_ids [B, L]`` (see :class:`SequencePairs`)."""
    s, keep = _sorted_unique(input_ids)
    B, dev = s.shape[0], s.device
    counts = keep.sum(1)
    items = s[keep]
    K = items.shape[0]
    seq = torch.repeat_interleave(torch.arange(B, device=dev), counts, output_size=K)
    start = counts.cumsum(0) - counts
    pos = torch.arange(K, device=dev) - start[seq]
    partners = counts[seq] - pos - (0 if diagonal else 1)  # the j >= i (j > i) of each i in its sequence
    P = int(partners.sum()) if K else 0
    i = torch.repeat_interleave(torch.arange(K, device=dev), partners, output_size=P)
    first = partners.cumsum(0) - partners
    j = i + (torch.arange(P, device=dev) - first[i]) + (0 if diagonal else 1)
    return SequencePairs(items, seq, i, j, B, pos, int(counts.max()) if K else 0)


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


def frobenius_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`frobenius_loss` on the i ≤ j pair lists ``[..., P]`` (leading dims: e.g. one row per modality, the
    result has their shape): each i < j pair stands for both orders (weight 2)."""
    sq = (r_hat - r).pow(2) * (pairs.weight / tau**2)
    per_seq = sq.new_zeros(*sq.shape[:-1], pairs.n_seq).index_add(sq.dim() - 1, pairs.pair_seq, sq)
    has = pairs.has_pairs
    if not bool(has.any()):
        return r_hat.sum(-1) * 0
    return torch.sqrt(per_seq[..., has] + 1e-8).mean(-1)


def _segments(row: Tensor, G: int, n_rows: int) -> Tensor:
    """Flat segment ids of ``[G, Q]`` values whose segments are ``row [Q]`` (ids < n_rows) within each leading row."""
    return (row + torch.arange(G, device=row.device)[:, None] * n_rows).reshape(-1)


def _segment_softmax(x: Tensor, row: Tensor, n_rows: int) -> Tensor:
    """Softmax of ``x [..., Q]`` within the segments ``row [Q]`` (ids < n_rows), separately for every leading index."""
    lead, Q = x.shape[:-1], x.shape[-1]
    G = math.prod(lead)
    seg = _segments(row, G, n_rows)
    flat = x.reshape(-1)
    with torch.no_grad():
        mx = flat.new_full((G * n_rows,), float("-inf")).scatter_reduce(0, seg, flat, "amax", include_self=True)
    e = torch.exp(flat - mx.index_select(0, seg))
    return (e / e.new_zeros(G * n_rows).index_add(0, seg, e).index_select(0, seg)).reshape(*lead, Q)


def soft_match_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`soft_match_loss` on the pair lists ``[..., P]`` (result: the leading shape): the i < j pairs are
    mirrored to get every ordered pair, then a softmax over each row (b, i), for student and teacher in one go, and
    the squared error averaged over the ordered pairs. The teacher's ``r`` is a constant (no gradient); the
    backward is written by hand (:class:`_SoftMatch`; :func:`soft_match_pairs_reference` is the autograd form)."""
    lead, P = r_hat.shape[:-1], r_hat.shape[-1]
    G = math.prod(lead)
    out = _SoftMatch.apply(r_hat.reshape(G, P), r.detach().expand_as(r_hat).reshape(G, P), pairs.off, pairs.rows,
                           pairs.items.shape[0], float(tau))
    return out.reshape(lead)


def soft_match_pairs_reference(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`soft_match_pairs` with plain autograd operations (the readable definition the tests compare with)."""
    both = torch.stack([r_hat, r.expand_as(r_hat)])
    x = torch.cat([both, both.index_select(both.dim() - 1, pairs.off)], -1) / tau
    p = _segment_softmax(x, pairs.rows, pairs.items.shape[0])
    return (p[0] - p[1]).pow(2).sum(-1) / max(x.shape[-1], 1)


class _SoftMatch(torch.autograd.Function):
    """``r_hat, r [G, P]`` -> ``[G]`` soft-match losses (:func:`soft_match_pairs_reference`), one node instead of
    ~15: the forward computes both softmaxes in one pass, the backward is the softmax's
    ``p ⊙ (dp − Σ_row p ⊙ dp) / τ`` with the mirrored half folded back onto the i < j pairs."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, r_hat: Tensor, r: Tensor, off: Tensor, rows: Tensor, n_rows: int, tau: float) -> Tensor:
        G, P = r_hat.shape
        both = torch.cat([r_hat, r])  # [2G, P]: student rows, then teacher rows
        x = torch.cat([both, both.index_select(1, off)], 1).div_(tau)
        p = _segment_softmax(x, rows, n_rows)
        ps, diff = p[:G], p[:G] - p[G:]
        Q = max(x.shape[1], 1)
        ctx.save_for_backward(ps, diff, off, rows)
        ctx.n_rows, ctx.tau, ctx.Q, ctx.P = n_rows, tau, Q, P
        return diff.pow(2).sum(1) / Q

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor):
        ps, diff, off, rows = ctx.saved_tensors
        G, P = ps.shape[0], ctx.P
        dp = diff.mul_(grad.view(G, 1) * (2 / ctx.Q))  # the saved difference is not needed again
        seg = _segments(rows, G, ctx.n_rows)
        pd = (ps * dp).reshape(-1)
        s = pd.new_zeros(G * ctx.n_rows).index_add_(0, seg, pd).index_select(0, seg).view_as(ps)
        dx = dp.sub_(s).mul_(ps).div_(ctx.tau)
        d_r = dx[:, :P].clone()
        d_r.index_add_(1, off, dx[:, P:])
        return d_r, None, None, None, None, None


def block_xi(z: Tensor, pairs: SequencePairs, xi: str) -> Tensor:
    """:func:`pair_xi` of ``pairs`` for ``z [M, K, d]`` (K = the batch's unique items), by one batched product
    per sequence: the rows go to a padded ``[M·B, U, d]`` layout, ``[M·B, U, U]`` scores are formed and the pairs
    read from them. Moves K rows, not the 2·P rows a per-pair gather reads (and its backward writes back);
    the score blocks (B·U² scalars, U ≤ the batch's longest sequence) are far smaller than ``[P, d]``.
    Products only (cos, dot; cos normalises the rows inside the same node); distances go through :func:`pair_xi`."""
    if xi not in ("cos", "dot"):
        return pair_xi(z, pairs.i, pairs.j, xi)
    return _BlockGram.apply(z, pairs.slot, pairs.flat, pairs.n_seq, pairs.width, xi == "cos")


class _BlockGram(torch.autograd.Function):
    """``z [M, K, d]`` -> ``[M, P]`` products ``z_i · z_j`` of the listed pairs (of the rows normalised as
    ``F.normalize(z, eps=1e-8)`` when ``normalize``), through the padded per-sequence Gram blocks; the backward uses
    the symmetry (``dZ = (dG + dGᵀ) Z``: one batched product, not two), then the normalisation's
    ``(dẑ − ẑ (ẑ · dẑ)) / |z|``."""

    EPS = 1e-8

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, z: Tensor, slot: Tensor, flat: Tensor, B: int, U: int, normalize: bool) -> Tensor:
        M, K, d = z.shape
        norm = z.norm(dim=-1, keepdim=True).clamp_min_(_BlockGram.EPS) if normalize else None
        zn = z / norm if normalize else z
        zp = z.new_zeros((M, B * U, d)).index_copy_(1, slot, zn).view(M * B, U, d)
        ctx.save_for_backward(zp, slot, flat, norm)
        ctx.B, ctx.U, ctx.normalize = B, U, normalize
        return torch.bmm(zp, zp.transpose(1, 2)).view(M, B * U * U).index_select(1, flat)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor):
        zp, slot, flat, norm = ctx.saved_tensors
        B, U = ctx.B, ctx.U
        M, d = grad.shape[0], zp.shape[-1]
        dG = grad.new_zeros((M, B * U * U))
        dG.index_add_(1, flat, grad)
        dG = dG.view(M * B, U, U)
        dz = torch.bmm(dG + dG.transpose(1, 2), zp).view(M, B * U, d).index_select(1, slot)
        if ctx.normalize:  # rows at the eps floor: norm is the constant eps there, so only the division applies
            zn = zp.view(M, B * U, d).index_select(1, slot)
            radial = (dz * zn).sum(-1, keepdim=True)
            dz = dz.sub_(zn.mul_(radial.masked_fill_(norm <= _BlockGram.EPS, 0))).div_(norm)
        return dz, None, None, None, None, None


def stacked_linear(x: Tensor, layers: list[nn.Linear]) -> Tensor:
    """``x [M, K, d_in]`` through ``layers[m]`` for each m, as one batched matrix product (``M`` separate
    ``nn.Linear`` modules keep their own parameters and state-dict keys)."""
    if len(layers) == 1:
        return layers[0](x[0]).unsqueeze(0)
    w = torch.stack([lin.weight for lin in layers]).transpose(1, 2)
    b = torch.stack([lin.bias for lin in layers]).unsqueeze(1)
    return torch.baddbmm(b, x, w)


def stacked_module(x: Tensor, mods: list[nn.Module]) -> Tensor:
    """``x [M, K, d]`` through each modality's g_φ (a Linear, or a Sequential of Linear layers), all modalities
    batched layer by layer."""
    for layer in zip(*[list(m) if isinstance(m, nn.Sequential) else [m] for m in mods]):
        x = stacked_linear(x, list(layer))
    return x


def code_head_nll(E: Tensor, ia: Tensor, ib: Tensor, heads: list[nn.Module], t_off: Tensor,
                  t_diag: Tensor) -> Tensor:
    """The dissected loss of every modality of a group, before averaging: ``[M]`` sums of
    ``−log softmax(head_m(|e_a − e_b|))[code]``, weight 2 for each i < j pair (it stands for both orders) and 1 for
    each diagonal pair (input 0). ``E [M, K, d]``: the modalities' embeddings of the batch's unique items;
    ``ia``, ``ib`` ``[P]``: the rows of the two ends of the i < j pairs; ``t_off [M, P]`` their teacher codes;
    ``t_diag [M, n]`` the codes of the diagonal pairs.

    One autograd node with a hand-written backward (:class:`_CodeHeadNLL`) instead of ~25 small ones: on CPU this
    head's cost was mostly passes over ``[M, P, d]`` temporaries, not FLOPs. :func:`code_head_nll_reference` is the
    same computation with autograd (the tests compare values and gradients)."""
    W1 = torch.stack([h[0].weight for h in heads])
    b1 = torch.stack([h[0].bias for h in heads])
    W2 = torch.stack([h[2].weight for h in heads])
    b2 = torch.stack([h[2].bias for h in heads])
    return _CodeHeadNLL.apply(E, ia, ib, W1, b1, W2, b2, t_off, t_diag)


def code_head_nll_reference(E: Tensor, ia: Tensor, ib: Tensor, heads: list[nn.Module], t_off: Tensor,
                            t_diag: Tensor) -> Tensor:
    """:func:`code_head_nll` with plain autograd operations (the readable definition)."""
    z = torch.stack([h((e[ia] - e[ib]).abs()) for e, h in zip(E, heads)])
    z0 = torch.stack([h(E.new_zeros(E.shape[-1])) for h in heads])  # [M, x]
    dtype = torch.promote_types(z.dtype, torch.float32)  # half-precision logits: softmax in float32
    logp, logp0 = F.log_softmax(z.to(dtype), dim=-1), F.log_softmax(z0.to(dtype), dim=-1)
    return -2 * logp.gather(-1, t_off.unsqueeze(-1)).sum((1, 2)) - logp0.gather(1, t_diag).sum(1)


class _CodeHeadNLL(torch.autograd.Function):
    """Forward and backward of :func:`code_head_nll_reference` for stacked heads (``W1 [M, h, d]``, ``b1 [M, h]``,
    ``W2 [M, x, h]``, ``b2 [M, x]``: ``nn.Linear`` layouts). Four passes over the big temporaries forward and
    six backward, besides the six batched products: the pairs' ends are read from the K item rows and their
    gradients added back there (no ``[2P, d]`` gradient for the tables), the diagonal pairs' shared zero input is
    computed on its own, the softmax reuses the saved log-probabilities in place, and the upstream gradient scales
    the small weight tensors rather than ``[M, P, x]``. Runs in float32 under CUDA autocast."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, E: Tensor, ia: Tensor, ib: Tensor, W1: Tensor, b1: Tensor, W2: Tensor, b2: Tensor,
                t_off: Tensor, t_diag: Tensor) -> Tensor:
        G, P = t_off.shape
        diff, other = E.new_empty((G, P, E.shape[2])), E.new_empty((P, E.shape[2]))
        for g in range(G):  # (dim-0 index_select into place: ~2x faster on CPU than one dim-1 select)
            torch.sub(torch.index_select(E[g], 0, ia, out=diff[g]), torch.index_select(E[g], 0, ib, out=other),
                      out=diff[g])
        x = diff.abs()
        h = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
        logp = torch.baddbmm(b2.unsqueeze(1), h, W2.transpose(1, 2)).log_softmax(-1)  # [M, P, x]
        h0 = b1.relu().unsqueeze(1)  # |e_i − e_i| = 0: the diagonal pairs' hidden layer
        logp0 = torch.baddbmm(b2.unsqueeze(1), h0, W2.transpose(1, 2)).log_softmax(-1)  # [M, 1, x]
        ctx.save_for_backward(diff, x, h, logp, h0, logp0, W1, W2, t_off, t_diag, ia, ib)
        ctx.K = E.shape[1]
        return -2 * logp.gather(-1, t_off.unsqueeze(-1)).sum((1, 2)) - logp0[:, 0].gather(1, t_diag).sum(1)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor):
        diff, x, h, logp, h0, logp0, W1, W2, t_off, t_diag, ia, ib = ctx.saved_tensors
        G, P = x.shape[:2]
        # d/dz of −log softmax(z)[c] is softmax(z) − onehot(c); the i < j rows carry weight 2·grad, the zero row
        # n_diag·grad on its softmax minus grad per diagonal pair's code
        dz = logp.exp_()  # the saved log-probabilities are not needed again
        dz.scatter_add_(2, t_off.unsqueeze(-1), dz.new_full((G, P, 1), -1.0))
        c = (2 * grad).view(G, 1, 1)
        dz0 = logp0.exp() * t_diag.shape[1]
        dz0[:, 0].scatter_add_(1, t_diag, dz0.new_full(t_diag.shape, -1.0))
        dz0 = dz0 * grad.view(G, 1, 1)
        dW2 = torch.bmm(dz.transpose(1, 2), h).mul_(c).add_(torch.bmm(dz0.transpose(1, 2), h0))
        db2 = dz.sum(1).mul_(c[:, 0]).add_(dz0[:, 0])
        dh = torch.ops.aten.threshold_backward(torch.bmm(dz, W2 * c), h, 0)
        dh0 = torch.ops.aten.threshold_backward(torch.bmm(dz0, W2), h0, 0)
        dW1 = torch.bmm(dh.transpose(1, 2), x)  # the zero input adds nothing to dW1
        db1 = dh.sum(1).add_(dh0[:, 0])
        da = torch.bmm(dh, W1).mul_(diff.sgn_())  # d/d e_a; d/d e_b is its negative
        return pair_row_sums(da, ia, ib, ctx.K), None, None, dW1, db1, dW2, db2, None, None


def pair_row_sums(v: Tensor, ia: Tensor, ib: Tensor, K: int, sparse: bool | None = None) -> Tensor:
    """``[G, K, d]``: for every row k, the sum of ``v[:, p]`` over the pairs with ``ia[p] = k`` minus the sum over
    those with ``ib[p] = k`` (``v [G, P, d]``; the gradient of ``e_a − e_b`` back to the item rows). On CPU
    (``sparse`` None) one sparse product per g, ~3x faster than two ``index_add_``, which other devices use."""
    G, _, d = v.shape
    if sparse is None:
        sparse = v.device.type == "cpu"
    if sparse:
        S = _incidence(ia, ib, K, v.dtype)
        return torch.stack([S @ v[g] for g in range(G)])
    out = v.new_zeros((G, K, d))
    for g in range(G):
        out[g].index_add_(0, ia, v[g]).index_add_(0, ib, v[g], alpha=-1)
    return out


def _incidence(ia: Tensor, ib: Tensor, K: int, dtype: torch.dtype) -> Tensor:
    """``[K, P]`` sparse CSR matrix with +1 at ``(ia[p], p)`` and −1 at ``(ib[p], p)`` (``ia[p] != ib[p]``): times
    the per-pair gradients it gives every item row's sum, each row added in a fixed order (deterministic)."""
    P = ia.shape[0]
    rows = torch.cat([ia, ib])
    col = torch.arange(2 * P, device=ia.device) % P
    order = torch.argsort(rows * max(P, 1) + col)  # by row, then pair: a sorted, duplicate-free CSR layout
    crow = torch.zeros(K + 1, dtype=torch.long, device=ia.device)
    torch.cumsum(torch.bincount(rows, minlength=K), 0, out=crow[1:])
    val = torch.where(order < P, 1.0, -1.0).to(dtype)
    with warnings.catch_warnings():  # (torch warns once that sparse CSR support is in beta)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col.index_select(0, order), val, (K, P))


class CDL(nn.Module):
    """The student heads and losses for every supervised modality. ``forward(input_ids, tables)`` returns a dict
    ``{"cdl": weighted total, "cdl/<modality>_holistic": ..., "cdl/<modality>_code": ...}`` (unweighted parts).

    All modalities are computed together (stacked ``[M, ...]`` tensors, batched matrix products; see the module
    docstring on cost)."""

    def __init__(self, cfg: CDLConfig, teacher: Any, dim: int = 128, n_codes: int | None = None,
                 key: str = "models.<name>"):
        super().__init__()
        cfg.validate(key)
        if teacher is None:
            raise ParamError(f"{key}.arch", "KDSR needs the distill stage's teacher (models/<ds>/teacher)")
        self.cfg = cfg
        self.__dict__["teacher"] = teacher  # not a submodule: it is the distill stage's output, not a parameter
        self.xi = normalise_xi(cfg.xi or teacher_attr(teacher, "xi", "cos"), f"{key}.xi")
        self.weights = {m: (float(cfg.weights[m][0]), float(cfg.weights[m][1])) for m in cfg.modalities}
        self.proj = nn.ModuleDict()
        self.code_head = nn.ModuleDict()
        for m in cfg.modalities:
            hol, code = self.weights[m]
            if hol > 0:
                layers = [nn.Linear(dim, dim) for _ in range(cfg.proj_layers)]
                self.proj[m] = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
            if code > 0:
                x = n_codes if n_codes is not None else teacher_n_codes(teacher, m)
                self.code_head[m] = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, int(x)))
        self.hol_mods = [m for m in cfg.modalities if m in self.proj]
        self.code_mods = [m for m in cfg.modalities if m in self.code_head]
        # code heads batch together when their codebooks have the same size (always, with one kdsr.codes)
        groups: dict[int, list[str]] = {}
        for m in self.code_mods:
            groups.setdefault(self.code_head[m][-1].out_features, []).append(m)
        self.code_groups = list(groups.values())
        self.cache = PairCache(cfg.teacher_cache)  # one cache, the answers of every modality side by side

    def _teacher(self, device: torch.device) -> Any:
        t = self.teacher
        if hasattr(t, "to") and teacher_attr(t, "device", device) != device:
            moved = t.to(device)
            self.__dict__["teacher"] = t = moved if moved is not None else t
        return t

    def _ask(self, teacher: Any, i: Tensor, j: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The teacher's answers for item pairs: ``holistic [n, len(hol_mods)]``, ``codes [n, len(code_mods)]``."""
        hol, codes = {}, {}
        for m in dict.fromkeys(self.hol_mods + self.code_mods):
            hol[m], codes[m] = teacher_lookup(teacher, i, j, m, m in self.proj, m in self.code_head)
        h = torch.stack([hol[m].float() for m in self.hol_mods], 1) if self.hol_mods else None
        c = torch.stack([codes[m].long() for m in self.code_mods], 1) if self.code_mods else None
        return h, c

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, device: torch.device | None = None, chunk: int = 2048) -> int:
        """Ask the teacher, once, about every pair the sequences ``input_ids [W, L]`` (all training windows) will
        supervise, and cache the answers (up to ``teacher_cache`` pairs): the first epoch then costs what every
        later one does, and the teacher sees each pair once, in large batches. Returns the number of cached pairs."""
        if self.cache.max_pairs <= 0:
            return 0
        device = torch.device(device) if device is not None else input_ids.device
        teacher = self._teacher(device)
        need = (bool(self.hol_mods), bool(self.code_mods))
        for s in range(0, input_ids.shape[0], chunk):
            if len(self.cache) >= self.cache.max_pairs:
                break  # full: the remaining pairs are asked for batch by batch
            pairs = sequence_pairs(input_ids[s:s + chunk].to(device), self.cfg.diagonal)
            ii, jj = pairs.items.index_select(0, pairs.i), pairs.items.index_select(0, pairs.j)
            self.cache.add(ii, jj, lambda a, b: self._ask(teacher, a, b), need)
        self.cache.compact()
        return len(self.cache)

    def forward(self, input_ids: Tensor, tables: dict[str, nn.Embedding]) -> dict[str, Tensor]:
        for m in self.cfg.modalities:
            if m not in tables:
                raise ParamError("models.<name>.modalities", f"the backbone has no trainable {m!r} table")
        pairs = sequence_pairs(input_ids, self.cfg.diagonal)
        items = pairs.items
        teacher = self._teacher(items.device)
        ii, jj = items.index_select(0, pairs.i), items.index_select(0, pairs.j)
        need = (bool(self.hol_mods), bool(self.code_mods))
        r, target = self.cache.get(ii, jj, lambda a, b: self._ask(teacher, a, b), need)
        out: dict[str, Tensor] = {}
        terms: list[Tensor] = []
        # every modality's rows of the batch's unique items, gathered once for both losses (sparse table gradients)
        rows = {m: table_rows(tables[m].weight, items) for m in dict.fromkeys(self.hol_mods + self.code_mods)}
        stacked: dict[tuple[str, ...], Tensor] = {}

        def stack(mods: list[str]) -> Tensor:  # [M, K, d], shared when both losses use the same modalities
            key = tuple(mods)
            if key not in stacked:
                stacked[key] = torch.stack([rows[m] for m in mods])
            return stacked[key]

        if self.hol_mods:  # holistic: ξ(g_φ(e_i), g_φ(e_j)) against the teacher's ξ(m̃_i, m̃_j), all at once
            Z = stacked_module(stack(self.hol_mods), [self.proj[m] for m in self.hol_mods])
            r_hat = block_xi(Z.float(), pairs, self.xi)  # [M, P]
            r = r.to(device=r_hat.device, dtype=r_hat.dtype).t()
            loss = frobenius_pairs if self.cfg.holistic_loss == "frobenius" else soft_match_pairs
            parts = loss(r_hat, r, pairs, self.cfg.tau)  # [M]
            for m, v in zip(self.hol_mods, parts.detach().unbind()):
                out[f"cdl/{m}_holistic"] = v
            terms.append((parts * parts.new_tensor([self.weights[m][0] for m in self.hol_mods])).sum())
        if self.code_mods:
            target = target.to(device=items.device, dtype=torch.long)
            col = {m: k for k, m in enumerate(self.code_mods)}
            n_off, n_diag = pairs.off.shape[0], pairs.diag.shape[0]
            ia, ib = pairs.i.index_select(0, pairs.off), pairs.j.index_select(0, pairs.off)
            for group in self.code_groups:
                heads = [self.code_head[m] for m in group]
                t = target[:, [col[m] for m in group]].t()  # [M, P]
                ce = code_head_nll(stack(group), ia, ib, heads, t.index_select(1, pairs.off),
                                   t.index_select(1, pairs.diag))
                parts = ce / max(2 * n_off + n_diag, 1)
                for m, v in zip(group, parts.detach().unbind()):
                    out[f"cdl/{m}_code"] = v
                terms.append((parts * parts.new_tensor([self.weights[m][1] for m in group])).sum())
        order = [f"cdl/{m}_{k}" for m in self.cfg.modalities for k in ("holistic", "code")]
        out = {k: out[k] for k in order if k in out}
        out["cdl"] = sum(terms[1:], terms[0]) if terms else input_ids.new_zeros((), dtype=torch.float32)
        return out


class PairCache:
    """The teacher's answers for item pairs, kept across batches: the teacher is fixed and the same training windows
    (so the same pairs) come back every epoch, so from the second epoch on CDL costs no teacher lookups. Exactly
    the teacher's values (it is deterministic per pair). Sorted int64 keys ``i << 32 | j`` searched with
    ``searchsorted``; new pairs are merged (linear time) into a small sorted segment, itself merged into the main
    one when it grows past 1/8 of it. At most ``max_pairs`` pairs are kept (0 = no cache); later pairs are
    simply looked up every time. Memory: 8 bytes a pair plus 4 bytes per answer (24 bytes with two modalities)."""

    def __init__(self, max_pairs: int):
        self.max_pairs = int(max_pairs)
        self.segments: list[tuple[Tensor, Tensor | None, Tensor | None]] = []  # (keys, holistic, codes int32)
        self.need: tuple[bool, bool] | None = None

    def __len__(self) -> int:
        return sum(len(k) for k, _, _ in self.segments)

    def get(self, i: Tensor, j: Tensor, fetch: Any, need: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
        """``(holistic, codes)`` of the pairs (``i <= j`` item ids), from the cache or ``fetch(i', j')``; values
        may have trailing dims (CDL keeps one column per modality), codes come back as int64."""
        if self.max_pairs <= 0:
            return fetch(i, j)
        self._start(need, i.device)
        keys = (i << 32) | j
        hol = codes = found = None
        for k, h, c in self.segments:
            pos = torch.searchsorted(k, keys).clamp(max=len(k) - 1)
            hit = k.index_select(0, pos) == keys
            if found is not None:
                hit &= ~found
            hol = _take(hol, h, pos, hit)
            codes = _take(codes, c, pos, hit)
            found = hit if found is None else found | hit
        if found is None or not bool(found.all()):
            miss = (~found).nonzero(as_tuple=True)[0] if found is not None else torch.arange(len(keys),
                                                                                           device=keys.device)
            new, inv = torch.unique(keys[miss], return_inverse=True)  # sorted, each pair once
            h_new, c_new = self._fetch(new, fetch, need)
            hol, codes = _put(hol, h_new, miss, inv, len(keys)), _put(codes, c_new, miss, inv, len(keys))
            if 0 < len(new) <= self.max_pairs - len(self):
                self._insert(new, h_new, c_new)
        return hol, (codes.long() if codes is not None else None)

    def add(self, i: Tensor, j: Tensor, fetch: Any, need: tuple[bool, bool]) -> None:
        """Fetch and keep the answers for the pairs not cached yet, as many as there is room for (the smallest keys
        first), without returning any."""
        self._start(need, i.device)
        new = torch.unique((i << 32) | j)
        for k, _, _ in self.segments:
            if len(new):
                new = new[k.index_select(0, torch.searchsorted(k, new).clamp(max=len(k) - 1)) != new]
        new = new[:max(self.max_pairs - len(self), 0)]
        if len(new):
            self._insert(new, *self._fetch(new, fetch, need))

    def _start(self, need: tuple[bool, bool], device: torch.device) -> None:
        if self.need != need or (self.segments and self.segments[0][0].device != device):
            self.segments, self.need = [], need  # what is cached, or where, changed: start again

    @staticmethod
    def _fetch(keys: Tensor, fetch: Any, need: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
        """The answers for sorted pair keys, as stored: holistic float32, codes int32."""
        h, c = fetch(keys >> 32, keys & 0xFFFFFFFF)
        return (h.to(device=keys.device, dtype=torch.float32) if need[0] else None,
                c.to(device=keys.device, dtype=torch.int32) if need[1] else None)

    def compact(self) -> None:
        """One sorted segment (one search a lookup), e.g. once no more pairs are coming."""
        if len(self.segments) == 2:
            self.segments = [_merge(*self.segments[0], *self.segments[1])]

    def _insert(self, k: Tensor, h: Tensor | None, c: Tensor | None) -> None:
        c = c.to(torch.int32) if c is not None else None
        if len(self.segments) < 2:
            self.segments.append((k, h, c))
        else:
            (k1, h1, c1) = self.segments[1]
            self.segments[1] = _merge(k1, h1, c1, k, h, c)
        if len(self.segments) == 2 and 8 * len(self.segments[1][0]) > len(self.segments[0][0]):
            self.segments = [_merge(*self.segments[0], *self.segments[1])]


def _take(acc: Tensor | None, values: Tensor | None, pos: Tensor, hit: Tensor) -> Tensor | None:
    """``values[pos]`` where ``hit``, ``acc`` elsewhere (``acc`` None: anything elsewhere, filled later)."""
    if values is None:
        return None
    got = values.index_select(0, pos)
    return got if acc is None else torch.where(hit.view(-1, *[1] * (got.dim() - 1)), got, acc)


def _put(acc: Tensor | None, new: Tensor | None, miss: Tensor, inv: Tensor, n: int) -> Tensor | None:
    """``acc`` with the fetched values ``new[inv]`` written at the rows ``miss``."""
    if new is None:
        return None
    if acc is None:
        acc = new.new_empty((n, *new.shape[1:]))
    acc[miss] = new.index_select(0, inv)
    return acc


def _merge(k1: Tensor, h1: Tensor | None, c1: Tensor | None, k2: Tensor, h2: Tensor | None,
           c2: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Merge two sorted key segments (and their values) in linear time, without sorting again."""
    at2 = torch.searchsorted(k1, k2) + torch.arange(len(k2), device=k2.device)  # final slots of the k2 entries
    at1 = torch.ones(len(k1) + len(k2), dtype=torch.bool, device=k1.device)
    at1[at2] = False

    def place(a: Tensor | None, b: Tensor | None) -> Tensor | None:
        if a is None:
            return None
        out = a.new_empty((len(a) + len(b), *a.shape[1:]))
        out[at1] = a
        out[at2] = b
        return out

    return place(k1, k2), place(h1, h2), place(c1, c2)


def table_rows(weight: Tensor, ids: Tensor) -> Tensor:
    """``weight[ids]`` with a *sparse* gradient for the table: CDL touches a few hundred rows of an ``[N+1, d]``
    table, and a dense gradient would cost a zero-fill and an extra add of the whole table every step (the
    backbone's own dense gradient absorbs the sparse one). Should CDL be the table's only user in a backward pass,
    a hook turns the sparse gradient dense before the optimiser sees it."""
    if weight.requires_grad and not getattr(weight, "_cdl_densify", False):
        weight.register_post_accumulate_grad_hook(_densify_grad)
        weight._cdl_densify = True
    return F.embedding(ids, weight, sparse=True)


def _densify_grad(p: Tensor) -> None:
    if p.grad is not None and p.grad.is_sparse:
        p.grad = p.grad.to_dense()


def teacher_lookup(teacher: Any, i: Tensor, j: Tensor, modality: str, holistic: bool,
                   codes: bool) -> tuple[Tensor | None, Tensor | None]:
    """The teacher's holistic correlations and/or codes of the pairs; one fused ``lookup`` (a single gather of both
    items' m̃) when both are needed and the teacher has it."""
    if holistic and codes and callable(getattr(teacher, "lookup", None)):
        return teacher.lookup(i, j, modality)
    return (teacher.holistic(i, j, modality) if holistic else None, teacher.codes(i, j, modality) if codes else None)


def teacher_attr(teacher: Any, name: str, default: Any) -> Any:
    return getattr(teacher, name, default)


def teacher_n_codes(teacher: Any, modality: str) -> int:
    """The number of codewords x the teacher assigns for ``modality``."""
    for name in ("n_codes", "codes_per_modality", "x"):
        v = getattr(teacher, name, None)
        if callable(v):
            v = v(modality)
        if isinstance(v, dict):
            v = v.get(modality)
        if v is not None:
            return int(v)
    raise ParamError("kdsr.codes", "the teacher does not say how many codewords it has")
