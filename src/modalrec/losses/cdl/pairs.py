"""Which pairs CDL supervises, as flat index lists: one sort of the batch gives every sequence's unique items
(:func:`unique_items`, :func:`sequence_pairs`) and the pairs i ≤ j of the same sequence (:class:`SequencePairs`,
with the derived index lists every modality and loss shares). O(Σ_b U_b²), never N×N."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


def sorted_unique(input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """One sort per batch: ``(s, keep)`` with ``s`` each row ascending and ``keep`` True at the first occurrence of
    every non-padding item of the row."""
    s, _ = input_ids.sort(dim=1)
    keep = s > 0
    keep[:, 1:] &= s[:, 1:] != s[:, :-1]
    return s, keep


def unique_items(input_ids: Tensor) -> Tensor:
    """``[B, U]`` the unique non-padding items of each row, ascending (as ``np.unique`` in the released code), left
    padded with 0; U = the largest number of unique items in the batch (at least 1)."""
    s, keep = sorted_unique(input_ids)
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
    def counts(self) -> Tensor:
        """``[n_seq]`` the number of unique items of each sequence."""
        return torch.bincount(self.seq, minlength=self.n_seq)

    @cached_property
    def block_items(self) -> Tensor:
        """``[n_seq, U]`` each sequence's unique items in their block slots (:attr:`slot`), 0 in the padding slots."""
        out = self.items.new_zeros(self.n_seq * self.width)
        return out.index_copy_(0, self.slot, self.items).view(self.n_seq, self.width)

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
    s, keep = sorted_unique(input_ids)
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
