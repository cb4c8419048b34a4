"""Ranking metrics for one target per instance: HR@k (= Recall@k), MRR@k and NDCG@k (IDCG = 1).

Everything is computed from the **0-based rank** of the target among the catalogue (items 1..N), so a metric value
never depends on how the scores were batched. Ties: the default ("optimistic") rank is the number of items scoring
*strictly* higher than the target, the convention of KDSR's and RecBole's code; "pessimistic" counts every other
item scoring at least as high (a constant model then ranks its targets last instead of first). The two only differ
when scores tie exactly, which trained float models rarely produce; the gap is a useful bug detector.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ParamError

TIES = ("optimistic", "pessimistic")
AGGREGATES = ("instance", "user")
METRICS = ("hr", "mrr", "ndcg")


def target_ranks(scores: Tensor, targets: Tensor, ties: str = "optimistic") -> Tensor:
    """0-based rank of ``targets[b]`` in ``scores[b]`` ([B, N+1], column 0 = padding = -inf).

    Memory is O(B*N): one boolean comparison per score, no sort.
    """
    if ties not in TIES:
        raise ParamError("evaluate.ties", f"must be one of {TIES}, got {ties!r}")
    t = scores.gather(1, targets.view(-1, 1))
    if ties == "optimistic":  # (int32 sums are ~3x faster than the default int64 ones on CPU)
        return torch.gt(scores, t).sum(1, dtype=torch.int32).long()
    # every other item with a score >= the target's (the target itself is excluded by the -1)
    return torch.ge(scores, t).sum(1, dtype=torch.int32).long() - 1


def chunked_target_ranks(users: Tensor, table: Tensor, targets: Tensor, chunk: int, ties: str = "optimistic",
                         exclude: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """:func:`target_ranks` of the scores ``users @ table.T`` ([B, d] x [N+1, d]; column 0 = padding) without ever
    holding the [B, N+1] matrix: the catalogue is scored ``chunk`` items at a time and each chunk adds its count of
    items ranked above the target, so memory is O(B * chunk) (RecBole's full_sort_topk needs O(B * N)).

    ``exclude`` = (row, item) pairs whose scores are -inf (the history mask; the target itself is never excluded).
    The target's score is its own dot product, used in every chunk and written over its column, so the target never
    counts itself whatever the float rounding of the chunk's product. The counts add up exactly: the ranks equal the
    unchunked ones on the same scores, ties included.
    """
    if ties not in TIES:
        raise ParamError("evaluate.ties", f"must be one of {TIES}, got {ties!r}")
    if int(chunk) < 1:
        raise ParamError("evaluate.item_chunk", "must be >= 1")
    u = users.float()
    t_score = (u * table[targets].float()).sum(1, keepdim=True)  # [B, 1]
    rows = torch.arange(len(targets), device=u.device)
    count = torch.zeros(len(targets), dtype=torch.int64, device=u.device)
    n = table.shape[0]
    for lo in range(0, n, int(chunk)):
        hi = min(n, lo + int(chunk))
        s = u @ table[lo:hi].float().T  # [B, hi-lo]
        if lo == 0:
            s[:, 0] = float("-inf")
        if exclude is not None:
            b, it = exclude
            sel = (it >= lo) & (it < hi)
            s[b[sel], it[sel] - lo] = float("-inf")
        mine = (targets >= lo) & (targets < hi)
        s[rows[mine], targets[mine] - lo] = t_score[mine, 0]
        if ties == "optimistic":
            count += torch.gt(s, t_score).sum(1, dtype=torch.int32)
        else:
            count += torch.ge(s, t_score).sum(1, dtype=torch.int32)
    return count if ties == "optimistic" else count - 1


def metric_arrays(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-instance HR/MRR/NDCG@k from 0-based ranks (k larger than the catalogue simply makes every hit count)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < k
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"mrr@{k}": np.where(hit, 1.0 / (ranks + 1.0), 0.0),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0),
    }


def compute_metrics(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20), users: np.ndarray | None = None,
                    aggregate: str = "instance") -> dict[str, float]:
    """Mean metrics over instances (``aggregate="instance"``) or over users (each user's instances averaged first).

    Keys are ordered by k then metric: ``hr@5, mrr@5, ndcg@5, hr@10, ...``.
    """
    if aggregate not in AGGREGATES:
        raise ParamError("evaluate.aggregate", f"must be one of {AGGREGATES}, got {aggregate!r}")
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {}
    out: dict[str, float] = {}
    if aggregate == "user":
        if users is None:
            raise ValueError("aggregate='user' needs the user of every instance")
        users = np.asarray(users)
        uniq, inv = np.unique(users, return_inverse=True)
        counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    for k in ks:
        if int(k) < 1:
            raise ParamError("evaluate.ks", f"every k must be >= 1, got {k}")
        for name, v in metric_arrays(ranks, int(k)).items():
            if aggregate == "user":
                v = np.bincount(inv, weights=v, minlength=len(uniq)) / counts
            out[name] = float(v.mean())
    return out


def select_test_max(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """KDSR's reporting: for every metric separately, the best value over the epochs (different epochs may win)."""
    out: dict[str, float] = {}
    for row in history:
        for k, v in row.items():
            out[k] = max(out.get(k, -np.inf), float(v))
    return out
