"""The hand-written autograd nodes of CDL (one node each instead of ~15-25 small ones; see the package docstring
on cost) and the index plumbing their backwards share. Each has a plain-autograd definition in
:mod:`.reference` that the tests compare values and gradients with.

- :class:`SoftMatch`: the soft-match loss on pair lists (:func:`~modalrec.losses.cdl.soft_match_pairs`);
- :class:`BlockGram`: products of the listed pairs through per-sequence Gram blocks
  (:func:`~modalrec.losses.cdl.block_xi`);
- :class:`CodeHeadNLL`: the code head and its cross-entropy (:func:`~modalrec.losses.cdl.code_head_nll`);
- :func:`segment_softmax`, :func:`pair_row_sums`: a softmax within the rows of ordered pairs, and the sums of
  per-pair gradients back onto the item rows (one sparse incidence product on CPU).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def segment_ids(row: Tensor, G: int, n_rows: int) -> Tensor:
    """Flat segment ids of ``[G, Q]`` values whose segments are ``row [Q]`` (ids < n_rows) within each leading row."""
    return (row + torch.arange(G, device=row.device)[:, None] * n_rows).reshape(-1)


def segment_softmax(x: Tensor, row: Tensor, n_rows: int) -> Tensor:
    """Softmax of ``x [..., Q]`` within the segments ``row [Q]`` (ids < n_rows), separately for every leading index."""
    lead, Q = x.shape[:-1], x.shape[-1]
    G = math.prod(lead)
    seg = segment_ids(row, G, n_rows)
    flat = x.reshape(-1)
    with torch.no_grad():
        mx = flat.new_full((G * n_rows,), float("-inf")).scatter_reduce(0, seg, flat, "amax", include_self=True)
    e = torch.exp(flat - mx.index_select(0, seg))
    return (e / e.new_zeros(G * n_rows).index_add(0, seg, e).index_select(0, seg)).reshape(*lead, Q)


class SoftMatch(torch.autograd.Function):
    """``r_hat, r [G, P]`` -> ``[G]`` soft-match losses (:func:`soft_match_pairs_reference`), one node instead of
    ~15: the forward computes both softmaxes in one pass, the backward is the softmax's
    ``p ⊙ (dp − Σ_row p ⊙ dp) / τ`` with the mirrored half folded back onto the i < j pairs."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, r_hat: Tensor, r: Tensor, off: Tensor, rows: Tensor, n_rows: int, tau: float) -> Tensor:
        G, P = r_hat.shape
        both = torch.cat([r_hat, r])  # [2G, P]: student rows, then teacher rows
        x = torch.cat([both, both.index_select(1, off)], 1).div_(tau)
        p = segment_softmax(x, rows, n_rows)
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
        seg = segment_ids(rows, G, ctx.n_rows)
        pd = (ps * dp).reshape(-1)
        s = pd.new_zeros(G * ctx.n_rows).index_add_(0, seg, pd).index_select(0, seg).view_as(ps)
        dx = dp.sub_(s).mul_(ps).div_(ctx.tau)
        d_r = dx[:, :P].clone()
        d_r.index_add_(1, off, dx[:, P:])
        return d_r, None, None, None, None, None


class BlockGram(torch.autograd.Function):
    """``z [M, K, d]`` -> ``[M, P]`` products ``z_i · z_j`` of the listed pairs (of the rows normalised as
    ``F.normalize(z, eps=1e-8)`` when ``normalize``), through the padded per-sequence Gram blocks; with ``flat``
    None the blocks themselves, ``[M, B, U, U]`` (padding rows and columns 0). The backward uses the symmetry
    (``dZ = (dG + dGᵀ) Z``: one batched product, not two), then the normalisation's ``(dẑ − ẑ (ẑ · dẑ)) / |z|``."""

    EPS = 1e-8

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, z: Tensor, slot: Tensor, flat: Tensor, B: int, U: int, normalize: bool) -> Tensor:
        M, K, d = z.shape
        norm = z.norm(dim=-1, keepdim=True).clamp_min_(BlockGram.EPS) if normalize else None
        zn = z / norm if normalize else z
        zp = z.new_zeros((M, B * U, d)).index_copy_(1, slot, zn).view(M * B, U, d)
        ctx.save_for_backward(zp, slot, flat, norm)
        ctx.B, ctx.U, ctx.normalize = B, U, normalize
        G = torch.bmm(zp, zp.transpose(1, 2))
        return G.view(M, B, U, U) if flat is None else G.view(M, B * U * U).index_select(1, flat)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor):
        zp, slot, flat, norm = ctx.saved_tensors
        B, U = ctx.B, ctx.U
        M, d = grad.shape[0], zp.shape[-1]
        if flat is None:
            dG = grad.reshape(M * B, U, U)
        else:
            dG = grad.new_zeros((M, B * U * U))
            dG.index_add_(1, flat, grad)
            dG = dG.view(M * B, U, U)
        dz = torch.bmm(dG + dG.transpose(1, 2), zp).view(M, B * U, d).index_select(1, slot)
        if ctx.normalize:  # rows at the eps floor: norm is the constant eps there, so only the division applies
            zn = zp.view(M, B * U, d).index_select(1, slot)
            radial = (dz * zn).sum(-1, keepdim=True)
            dz = dz.sub_(zn.mul_(radial.masked_fill_(norm <= BlockGram.EPS, 0))).div_(norm)
        return dz, None, None, None, None, None


class CodeHeadNLL(torch.autograd.Function):
    """Forward and backward of :func:`code_head_nll_reference` for stacked heads (``W1 [M, h, d]``, ``b1 [M, h]``,
    ``W2 [M, x, h]``, ``b2 [M, x]``: ``nn.Linear`` layouts). Four passes over the big temporaries forward and
    six backward, besides the six batched products: the pairs' ends are read from the K item rows and their
    gradients added back there (no ``[2P, d]`` gradient for the tables), the diagonal pairs' shared zero input is
    computed on its own, the softmax reuses the saved log-probabilities in place, and the upstream gradient scales
    the small weight tensors rather than ``[M, P, x]``. Runs in float32 under CUDA autocast. ``w_off``: the
    weight of each listed i < j pair (2: it stands for both orders; larger when the pairs are a sample)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, E: Tensor, ia: Tensor, ib: Tensor, W1: Tensor, b1: Tensor, W2: Tensor, b2: Tensor,
                t_off: Tensor, t_diag: Tensor, w_off: float = 2.0) -> Tensor:
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
        ctx.K, ctx.w_off = E.shape[1], float(w_off)
        return -ctx.w_off * logp.gather(-1, t_off.unsqueeze(-1)).sum((1, 2)) - logp0[:, 0].gather(1, t_diag).sum(1)

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
        c = (ctx.w_off * grad).view(G, 1, 1)
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
        return pair_row_sums(da, ia, ib, ctx.K), None, None, dW1, db1, dW2, db2, None, None, None


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
