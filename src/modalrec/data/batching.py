"""Turn prepared sequences into training batches and evaluation instances.

Training is SASRec-style **all-position**: a user's training part ``items[:n_train]`` gives inputs ``items[:-1]`` and
next-item targets ``items[1:]``, every position trained with the full softmax. A training part longer than
``max_len + 1`` is cut into consecutive windows of ``max_len + 1`` items that overlap by one item, so every training
target is used once (pmixer keeps only the last window; on Amazon-like data, with 9 items a user, the two agree).

Everything is **left-padded** with 0 (contract) and cropped to the batch's longest sequence, so short-sequence data
costs what it weighs. Shuffling uses a generator seeded by (seed, epoch): the order of epoch e does not depend on
whether the run was resumed, which is what makes resume reproduce an uninterrupted run exactly.

Evaluation instances follow the split contract: the target at position p has history ``items[:p]`` truncated to the
last ``max_len`` items. They are sorted by history length for batching (less padding) and carry their index so
results go back to the original order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..models.base import Batch


def _left_pad(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if len(r):
            out[i, width - len(r):] = r
    return out


@dataclass
class TrainWindows:
    """All training windows of a dataset as one left-padded matrix ``[W, max_len + 1]``."""

    items: np.ndarray  # [W, max_len+1] int64, left-padded
    lengths: np.ndarray  # [W] number of items in the window (>= 2)
    users: np.ndarray  # [W]
    max_len: int

    @property
    def n_targets(self) -> int:
        return int((self.lengths - 1).sum())

    def __len__(self) -> int:
        return len(self.lengths)


def train_windows(sequences: Sequence[np.ndarray], n_train: np.ndarray, max_len: int) -> TrainWindows:
    """Cut every user's training part into windows of at most ``max_len + 1`` items (overlap 1), newest first."""
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    rows, lengths, users = [], [], []
    w = max_len + 1
    for u, (seq, nt) in enumerate(zip(sequences, n_train)):
        part = np.asarray(seq[: int(nt)], dtype=np.int64)
        end = len(part)
        while end >= 2:
            start = max(0, end - w)
            rows.append(part[start:end])
            lengths.append(end - start)
            users.append(u)
            end = start + 1  # the next window ends with this window's first item (its first input)
            if start == 0:
                break
    return TrainWindows(_left_pad(rows, w), np.asarray(lengths, dtype=np.int64), np.asarray(users, dtype=np.int64),
                        max_len)


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if shuffle:
        return np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return np.arange(n)


def _batch(items: torch.Tensor, lengths: np.ndarray, users: torch.Tensor, idx: np.ndarray) -> Batch:
    L = int(lengths[idx].max()) - 1  # inputs of the longest window
    rows = items[torch.from_numpy(idx)][:, -(L + 1):]
    inp, tgt = rows[:, :-1], rows[:, 1:]
    tgt = torch.where(inp > 0, tgt, torch.zeros_like(tgt))
    return Batch(input_ids=inp.contiguous(), targets=tgt.contiguous(), users=users[torch.from_numpy(idx)])


def train_batches(windows: TrainWindows, batch_size: int, seed: int, epoch: int,
                  shuffle: bool = True) -> Iterator[Batch]:
    """Yield :class:`Batch` es for one epoch, cropped to each batch's longest window."""
    order = _epoch_order(len(windows), seed, epoch, shuffle)
    items, users = torch.from_numpy(windows.items), torch.from_numpy(windows.users)
    for s in range(0, len(order), batch_size):
        yield _batch(items, windows.lengths, users, order[s: s + batch_size])


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s part of a global batch: windows ``rank, rank + world, ...`` (disjoint; together all)."""
    return idx[rank::world]


def sharded_train_batches(windows: TrainWindows, batch_size: int, seed: int, epoch: int, rank: int, world: int,
                          shuffle: bool = True) -> Iterator[tuple[Batch, float]]:
    """Data-parallel epochs: the global batches of :func:`train_batches` (same order), each split over ``world``
    ranks by :func:`shard`. Yields ``(this rank's batch, weight)``: ``weight = world * its targets / the global
    batch's targets``, so that averaging ``weight * mean loss`` over the ranks gives the global batch's mean loss.
    A rank left without windows (a last batch smaller than ``world``) gets the batch's first window with weight 0,
    so that every rank takes part in every step."""
    order = _epoch_order(len(windows), seed, epoch, shuffle)
    items, users = torch.from_numpy(windows.items), torch.from_numpy(windows.users)
    n_tgt = windows.lengths - 1
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        mine = shard(idx, rank, world)
        if len(mine) == 0:
            yield _batch(items, windows.lengths, users, idx[:1]), 0.0
        else:
            yield _batch(items, windows.lengths, users, mine), world * float(n_tgt[mine].sum()) / float(n_tgt[idx].sum())


@dataclass
class EvalInstances:
    """Evaluation instances of one split, sorted by history length (shortest first) for tight batches."""

    histories: np.ndarray  # [I, max_len] int64, left-padded, truncated history
    lengths: np.ndarray  # [I] length of the truncated history (>= 1)
    targets: np.ndarray  # [I]
    users: np.ndarray  # [I]
    positions: np.ndarray  # [I] position p of the target in the user's sequence
    index: np.ndarray  # [I] index of the instance in (user, position) order
    flat: np.ndarray  # all sequences concatenated (for masking the full history)
    offsets: np.ndarray  # [U+1] start of each user's sequence in ``flat``
    split: str

    def __len__(self) -> int:
        return len(self.targets)

    def full_history(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row-in-batch, item) pairs of the *untruncated* histories ``items[:p]`` of instances ``rows``."""
        p = self.positions[rows]
        starts = self.offsets[self.users[rows]]
        total = int(p.sum())
        b = np.repeat(np.arange(len(rows)), p)
        within = np.arange(total) - np.repeat(np.cumsum(p) - p, p)
        return b, self.flat[np.repeat(starts, p) + within]

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yield (rows, input_ids [B, L] cropped to the batch's longest history, targets [B])."""
        hist = torch.from_numpy(self.histories)
        tg = torch.from_numpy(self.targets)
        for s in range(0, len(self), batch_size):
            rows = np.arange(s, min(s + batch_size, len(self)))
            L = int(self.lengths[rows[-1]])  # sorted by length: the last row is the longest
            yield rows, hist[s: s + len(rows), -L:], tg[s: s + len(rows)]


def eval_instances(sequences: Sequence[np.ndarray], n_train: np.ndarray, n_valid: np.ndarray, split: str,
                   max_len: int, users: np.ndarray | None = None) -> EvalInstances:
    """Instances of ``split`` ("valid" or "test"): every target position of the split, teacher-forced history."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    nt, nv = np.asarray(n_train, dtype=np.int64), np.asarray(n_valid, dtype=np.int64)
    lo, hi = (nt, nt + nv) if split == "valid" else (nt + nv, lens)
    keep = np.ones(len(sequences), bool) if users is None else np.isin(np.arange(len(sequences)), users)
    counts = np.where(keep, np.maximum(hi - lo, 0), 0)
    u = np.repeat(np.arange(len(sequences)), counts)
    p = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    if len(p) and p.min() < 1:
        raise ValueError("an evaluation target at position 0 has no history (n_train must be >= 1)")
    offsets = np.concatenate([[0], np.cumsum(lens)])
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
    hl = np.minimum(p, max_len)
    order = np.argsort(hl, kind="stable")
    u, p, hl = u[order], p[order], hl[order]
    hist = np.zeros((len(p), max_len), dtype=np.int64)
    for i in range(len(p)):  # one slice per instance; ~0.1 s for 50k instances
        st = offsets[u[i]] + p[i]
        hist[i, max_len - hl[i]:] = flat[st - hl[i]: st]
    targets = flat[offsets[u] + p] if len(p) else np.zeros(0, np.int64)
    return EvalInstances(hist, hl, targets, u, p, order.astype(np.int64), flat, offsets, split)
