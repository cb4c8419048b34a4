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
    """The supervised pairs of a batch as flat lists (O(#pairs) memory), built on first use.

    ``items [K]``: every sequence's unique items, ascending within a sequence, sequences in batch order;
    ``seq [K]``: the sequence (batch row) of each; ``pos [K]`` its position within its sequence's unique items;
    ``counts [n_seq]`` the unique items of each sequence; ``width`` U, the most of them (0 without items).
    ``i``, ``j`` ``[P]``: positions in ``items`` of the pairs with i ≤ j (i < j without the diagonal) of the same
    sequence, ordered by (sequence, i, j) like ``upper_pairs``; ``n_pairs`` = P. The lists are only built when asked
    for: the block form of the Frobenius loss and the code head's sampled pairs (:meth:`off_pairs`) need none."""

    items: Tensor
    seq: Tensor
    n_seq: int
    pos: Tensor
    width: int
    counts: Tensor
    diagonal: bool
    n_pairs: int

    @cached_property
    def _lists(self) -> tuple[Tensor, Tensor]:
        K, dev = self.items.shape[0], self.items.device
        partners = self.counts.index_select(0, self.seq) - self.pos - (0 if self.diagonal else 1)  # j >= i (j > i)
        i = torch.repeat_interleave(torch.arange(K, device=dev), partners, output_size=self.n_pairs)
        first = partners.cumsum(0) - partners
        j = i + (torch.arange(self.n_pairs, device=dev) - first.index_select(0, i)) + (0 if self.diagonal else 1)
        return i, j

    @property
    def i(self) -> Tensor:
        return self._lists[0]

    @property
    def j(self) -> Tensor:
        return self._lists[1]

    @property
    def n_off(self) -> int:
        """The number of pairs i < j."""
        return self.n_pairs - self.n_diag

    @property
    def n_diag(self) -> int:
        """The number of diagonal pairs i = i: one per item with the diagonal, else none."""
        return self.items.shape[0] if self.diagonal else 0

    @cached_property
    def _off_ends(self) -> Tensor:
        """``[n_seq]`` the cumulated numbers of i < j pairs of the sequences."""
        return (self.counts * (self.counts - 1) // 2).cumsum(0)

    def off_pairs(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The positions in ``items`` of the i < j pairs number ``idx`` (in the order of :attr:`off`), i.e.
        ``(i[off[idx]], j[off[idx]])``, by arithmetic instead of from the lists: the sequence by a search of the
        per-sequence pair counts, then the row i of the rank r within the sequence (row t holds c − 1 − t pairs,
        so rows before i hold S(i) = i(c − 1) − i(i − 1)/2) from the quadratic's root, corrected to the exact
        integer."""
        ends = self._off_ends
        b = torch.searchsorted(ends, idx, right=True)
        c = self.counts.index_select(0, b)
        r = idx - (ends.index_select(0, b) - c * (c - 1) // 2)
        q = (2 * c - 1).double()
        i = ((q - torch.sqrt((q * q - 8 * r.double()).clamp(min=0))) / 2).floor().long()

        def before(t: Tensor) -> Tensor:  # S(t)
            return t * (c - 1) - t * (t - 1) // 2

        i = i + (before(i + 1) <= r).long() - (before(i) > r).long()  # the float root is within one of it
        base = (self.counts.cumsum(0) - self.counts).index_select(0, b)
        return base + i, base + i + 1 + (r - before(i))

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
        """``[n_seq]`` True for the sequences with at least one pair (one item with the diagonal, else two)."""
        return self.counts >= (1 if self.diagonal else 2)

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
    P = int((counts * (counts + 1 if diagonal else counts - 1)).sum()) // 2 if K else 0
    return SequencePairs(items, seq, B, pos, int(counts.max()) if K else 0, counts, diagonal, P)
