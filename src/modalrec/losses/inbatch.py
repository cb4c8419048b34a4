"""Debiased in-batch softmax (ODMT paper Eq. 5-6, as the released code computes it).

The released code's candidates are *every item occurrence* of the batch's training windows (B·(L+1) columns,
duplicates kept): sampling negatives from the batch draws an item in proportion to its popularity, which is why each
column's logit is corrected by ``- log pop(item)``, the positive included. For the query at position ``t`` of user
``b``:

- columns of padding (item 0) are masked;
- every column whose item occurs anywhere in user ``b``'s own window (past *and* future positions) is masked, except
  the query's own label column, so the user's other items are never negatives (false negatives);
- only positions with a target (``targets != 0``) are queries.

The released code has one training window per user, so "the user's window" and "the user's items in the batch" are
the same. The engine cuts a long training part into several windows (``data.batching``), and two windows of one user
can share a batch; then the other window's items would be negatives of the user's queries although the user
interacted with them. ``users`` (the batch's user ids) makes the mask cover every window of the query's user
(``ODMT.Config.user_mask: user``); without it each window is masked on its own (``window``, the released code's
rule, identical when every user has one window in the batch).

Here the columns are the batch's *distinct* items instead (about a quarter as many): the unmasked occurrences of one
item all have the same logit, so in every softmax sum they count as that item's logit plus ``log n``, n = the number
of them (:attr:`InBatchCandidates.log_count`: the item's occurrences in the batch, 1 for the query's label, which
stands only for the label occurrence, 0 occurrences for a masked item). The losses are the same sums grouped by item
(:func:`inbatch_ce`; ``losses.online_distill`` takes ``log_count`` too), up to float rounding.

Masked logits are set to a large *finite* negative value, not ``-inf``: the soft cross-entropy of online distillation
multiplies teacher probabilities (exactly 0 there) by student log-probabilities, and ``0 · -inf`` would be NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_VALUE = -1e4  # what the released code uses; exp(-1e4 / T) underflows to exactly 0 for any T <= 1


@dataclass
class InBatchCandidates:
    """The column layout of one batch, shared by every branch (computed once per step).

    ``col_items [K]``: the distinct non-padding items of the batch's windows, ascending, one column each.
    ``label_col [Q]``: the label column of each query; ``query_index [Q]``: flat index ``b·L + t`` of each query in
    the ``[B, L]`` grid; ``mask [Q, K]``: True where the column is *excluded* for that query; ``log_count [Q, K]``:
    log of the number of the released code's occurrence columns the column stands for (0 where masked).
    """

    col_items: Tensor
    label_col: Tensor
    query_index: Tensor
    mask: Tensor
    log_count: Tensor


def log_popularity(item_counts: Tensor) -> Tensor:
    """``log(count_i / Σ count)`` per item from the training counts ``[N+1]``; 0 for the padding item (as in the
    released code, where ``pop[0] = 1``). Items never seen in training (possible only if the caller's counts
    disagree with the batch) are clamped to a count of 1 so the correction stays finite."""
    counts = item_counts.detach().to(torch.float64)
    total = counts[1:].sum().clamp(min=1.0)
    logp = torch.log(counts.clamp(min=1.0) / total)
    logp[0] = 0.0
    return logp.to(torch.float32)


def build_candidates(input_ids: Tensor, targets: Tensor, users: Tensor | None = None) -> InBatchCandidates:
    """Column layout and masks for left-padded all-position batches.

    ``users [B]`` (optional): the windows' user ids; a query's mask then covers the items of every window of its
    user in the batch, not only of its own window (module docstring).

    The batch must satisfy the engine's teacher-forcing layout: ``targets[:, t] == input_ids[:, t+1]`` wherever
    ``targets[:, t] != 0`` and ``t < L-1``. Then the user's window is ``input_ids[b] ++ targets[b, -1]`` and the label
    of the query at ``(b, t)`` is its target, the occurrence ``input_ids[b, t+1]`` (or the appended last target). A
    batch that trains only the last position (all other targets 0) satisfies this too.
    """
    B, L = input_ids.shape
    if targets.shape != input_ids.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and input_ids {tuple(input_ids.shape)} differ in shape")
    shifted_ok = (targets[:, :-1] == 0) | (targets[:, :-1] == input_ids[:, 1:])
    if not bool(shifted_ok.all()):
        raise ValueError("in-batch softmax needs teacher-forced batches: targets[:, t] must equal input_ids[:, t+1]")
    window = torch.cat([input_ids, targets[:, -1:]], dim=1)  # [B, L+1]: the user's window = its occurrence columns
    items, window_k = torch.unique(window, return_inverse=True)  # distinct items (0 first when there is padding)
    count = torch.bincount(window_k.reshape(-1), minlength=len(items))
    has = torch.zeros(B, len(items), dtype=torch.bool, device=input_ids.device).scatter_(1, window_k, True)
    if bool(items[0] == 0):  # padding: masked for every query, so no column at all
        items, count, has = items[1:], count[1:], has[:, 1:]
    if users is not None:  # the union of the items of all windows of the same user
        if users.shape != (B,):
            raise ValueError(f"users {tuple(users.shape)} must have one id per window ({B})")
        _, same = torch.unique(users, return_inverse=True)
        per_user = torch.zeros(int(same.max()) + 1 if B else 0, has.shape[1], device=has.device)
        per_user.index_add_(0, same, has.to(per_user.dtype))
        has = per_user[same] > 0
    qb, qt = torch.nonzero(targets, as_tuple=True)  # queries in row-major (b, t) order: deterministic
    label_col = torch.searchsorted(items, targets[qb, qt])
    rows = torch.arange(qb.numel(), device=input_ids.device)
    mask = has[qb]  # [Q, K]: the user's own items are excluded ...
    mask[rows, label_col] = False  # ... except the label, whose column stands for the label occurrence only
    log_count = count.to(torch.float32).log().expand_as(mask).masked_fill(mask, 0.0)
    log_count[rows, label_col] = 0.0
    return InBatchCandidates(col_items=items, label_col=label_col, query_index=qb * L + qt, mask=mask,
                             log_count=log_count)


def inbatch_logits(queries: Tensor, columns: Tensor, cand: InBatchCandidates, log_pop: Tensor | None) -> Tensor:
    """Debiased, masked logits ``[Q, K]`` in float32: the logit of each of the column's occurrences.

    ``queries [Q, d]`` are the user vectors at the query positions, ``columns [K, d]`` the item vectors of the
    columns. ``log_pop [N+1]`` (see :func:`log_popularity`) or None for no popularity correction.
    """
    with torch.autocast(queries.device.type, enabled=False):  # float32 logits even under AMP
        if log_pop is None:
            z = queries.float() @ columns.float().T
        else:  # the correction is added by the product itself (one [Q, K] pass less)
            z = torch.addmm(log_pop[cand.col_items].neg().unsqueeze(0), queries.float(), columns.float().T)
        return z.masked_fill_(cand.mask, MASK_VALUE)  # in place: the product's backward does not need its output


def inbatch_ce(logits: Tensor, cand: InBatchCandidates) -> Tensor:
    """Mean cross-entropy of the label columns over all queries (over the occurrences: ``logits + log_count``)."""
    return F.cross_entropy(logits + cand.log_count, cand.label_col)
