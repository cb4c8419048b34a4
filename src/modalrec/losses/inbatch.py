"""Debiased in-batch softmax (ODMT paper Eq. 5-6, as the released code computes it).

Candidates are *every item occurrence* of the batch's training windows (B·(L+1) columns, duplicates kept): sampling
negatives from the batch draws an item in proportion to its popularity, which is why each column's logit is corrected
by ``- log pop(item)``, the positive included. For the query at position ``t`` of user ``b``:

- columns of padding (item 0) are masked;
- every column whose item occurs anywhere in user ``b``'s own window (past *and* future positions) is masked, except
  the query's own label column, so the user's other items are never negatives (false negatives);
- only positions with a target (``targets != 0``) are queries.

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

    ``col_items [C]``: item id of each column (C = B·L + B: every input position, then each user's last target).
    ``label_col [Q]``: the label column of each query; ``query_index [Q]``: flat index ``b·L + t`` of each query in
    the ``[B, L]`` grid; ``mask [Q, C]``: True where the column is *excluded* for that query.
    """

    col_items: Tensor
    label_col: Tensor
    query_index: Tensor
    mask: Tensor


def log_popularity(item_counts: Tensor) -> Tensor:
    """``log(count_i / Σ count)`` per item from the training counts ``[N+1]``; 0 for the padding item (as in the
    released code, where ``pop[0] = 1``). Items never seen in training (possible only if the caller's counts
    disagree with the batch) are clamped to a count of 1 so the correction stays finite."""
    counts = item_counts.detach().to(torch.float64)
    total = counts[1:].sum().clamp(min=1.0)
    logp = torch.log(counts.clamp(min=1.0) / total)
    logp[0] = 0.0
    return logp.to(torch.float32)


def build_candidates(input_ids: Tensor, targets: Tensor) -> InBatchCandidates:
    """Column layout and masks for left-padded all-position batches.

    The batch must satisfy the engine's teacher-forcing layout: ``targets[:, t] == input_ids[:, t+1]`` wherever
    ``targets[:, t] != 0`` and ``t < L-1``. Then the user's window is ``input_ids[b] ++ targets[b, -1]`` and the label
    of the query at ``(b, t)`` is the column of ``input_ids[b, t+1]`` (or of the appended last target). A batch that
    trains only the last position (all other targets 0) satisfies this too.
    """
    B, L = input_ids.shape
    if targets.shape != input_ids.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and input_ids {tuple(input_ids.shape)} differ in shape")
    shifted_ok = (targets[:, :-1] == 0) | (targets[:, :-1] == input_ids[:, 1:])
    if not bool(shifted_ok.all()):
        raise ValueError("in-batch softmax needs teacher-forced batches: targets[:, t] must equal input_ids[:, t+1]")
    device = input_ids.device
    window = torch.cat([input_ids, targets[:, -1:]], dim=1)  # [B, L+1]: the user's training window
    col_items = torch.cat([input_ids.reshape(-1), targets[:, -1]])  # [C], C = B·L + B
    # in_window[b, c]: column c's item occurs somewhere in user b's window. Memory B·(L+1)·C booleans per step.
    in_window = (window.unsqueeze(2) == col_items.view(1, 1, -1)).any(dim=1)  # [B, C]

    qb, qt = torch.nonzero(targets, as_tuple=True)  # queries in row-major (b, t) order: deterministic
    label_col = torch.where(qt < L - 1, qb * L + qt + 1, B * L + qb)
    mask = in_window[qb] | (col_items == 0).unsqueeze(0)  # [Q, C]
    mask[torch.arange(qb.numel(), device=device), label_col] = False
    return InBatchCandidates(col_items=col_items, label_col=label_col, query_index=qb * L + qt, mask=mask)


def inbatch_logits(queries: Tensor, columns: Tensor, cand: InBatchCandidates, log_pop: Tensor | None) -> Tensor:
    """Debiased, masked logits ``[Q, C]`` in float32.

    ``queries [Q, d]`` are the user vectors at the query positions, ``columns [C, d]`` the item vectors of the
    columns. ``log_pop [N+1]`` (see :func:`log_popularity`) or None for no popularity correction.
    """
    with torch.autocast(queries.device.type, enabled=False):  # float32 logits even under AMP
        z = queries.float() @ columns.float().T
        if log_pop is not None:
            z = z - log_pop[cand.col_items].unsqueeze(0)
        return z.masked_fill(cand.mask, MASK_VALUE)


def inbatch_ce(logits: Tensor, cand: InBatchCandidates) -> Tensor:
    """Mean cross-entropy of the label columns over all queries."""
    return F.cross_entropy(logits, cand.label_col)
