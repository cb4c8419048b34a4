"""The teacher's answers for item pairs, kept across batches (:class:`PairCache`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class PairCache:
    """The teacher's answers for item pairs, kept across batches: the teacher is fixed and the same training windows
    (so the same pairs) come back every epoch, so from the second epoch on CDL costs no teacher lookups. Exactly
    the teacher's values (it is deterministic per pair). Sorted int64 keys ``i << 32 | j`` searched with
    ``searchsorted``; new pairs are merged (linear time) into a small sorted segment, itself merged into the main
    one when it grows past 1/8 of it. At most ``max_pairs`` pairs are kept (0 = no cache); later pairs are
    simply looked up every time. Memory: 8 bytes a pair plus 4 bytes per answer (24 bytes with two modalities).

    Small catalogues (``(n+1)² <= DENSE_MAX`` for the largest cached item id n, e.g. MovieLens-100K's 1,349 items):
    :meth:`compact` also builds a dense ``[(n+1)²]`` int32 map from a pair to its position, so a lookup is one
    gather instead of a binary search (long histories: ~60k pairs a batch; the search was ~5% of a step)."""

    DENSE_MAX = 16_000_000  # entries of the dense position map (4 bytes each)

    def __init__(self, max_pairs: int):
        self.max_pairs = int(max_pairs)
        self.segments: list[tuple[Tensor, Tensor | None, Tensor | None]] = []  # (keys, holistic, codes int32)
        self.need: tuple[bool, bool] | None = None
        self.dense: tuple[int, Tensor] | None = None  # (n + 1, position map [(n+1)²]: -1 = not cached)

    def __len__(self) -> int:
        return sum(len(k) for k, _, _ in self.segments)

    def get(self, i: Tensor, j: Tensor, fetch: Any, need: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
        """``(holistic, codes)`` of the pairs (``i <= j`` item ids), from the cache or ``fetch(i', j')``; values
        may have trailing dims (CDL keeps one column per modality), codes come back as int64."""
        if self.max_pairs <= 0:
            return fetch(i, j)
        self._start(need, i.device)
        if self.dense is not None and len(self.segments) == 1:
            n1, slot = self.dense
            if bool((j < n1).all()):
                pos = slot.index_select(0, i * n1 + j)
                if bool((pos >= 0).all()):
                    _, h, c = self.segments[0]
                    pos = pos.long()
                    return (h.index_select(0, pos) if h is not None else None,
                            c.index_select(0, pos).long() if c is not None else None)
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
            self.segments, self.need, self.dense = [], need, None  # what is cached, or where, changed: start again

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
        self.dense = None
        if len(self.segments) == 1 and len(self.segments[0][0]):
            k = self.segments[0][0]
            n1 = int(max(int(k[-1] >> 32), int((k & 0xFFFFFFFF).max()))) + 1
            if n1 * n1 <= self.DENSE_MAX:
                slot = torch.full((n1 * n1,), -1, dtype=torch.int32, device=k.device)
                slot[(k >> 32) * n1 + (k & 0xFFFFFFFF)] = torch.arange(len(k), dtype=torch.int32, device=k.device)
                self.dense = (n1, slot)

    def _insert(self, k: Tensor, h: Tensor | None, c: Tensor | None) -> None:
        self.dense = None  # positions move: rebuilt by the next compact()
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
