"""Softmax losses for catalogues where the full softmax does not fit (``train.loss``).

The full softmax scores every query against all N items: [Q, N] logits per step (a million items and a batch of
64 x 50 positions: 12.8 GB of float32 logits, twice with the gradient). Two cheaper estimates, both with the logQ
correction (Bengio & Senecal 2008; Jean et al. 2015; Yi et al. 2019, "sampling-bias-corrected"):

- ``sampled``: K negatives shared by the whole batch, drawn with replacement from a proposal q (``uniform`` over
  1..N or ``popularity``, q_i ∝ count_i + 1 over the training windows). The positive keeps its exact logit s_t;
  each negative's is corrected by ``- log(K q_j)``, so that the negatives' ``Σ_j exp(s_j) / (K q_j)`` is an unbiased
  importance-sampling estimate of ``Σ_{i≠t} exp(s_i)``, the rest of the full softmax's partition function (a
  negative equal to the target, an "accidental hit", is masked). The loss thus converges to the full softmax
  cross-entropy as K grows, whatever q is (tested). Memory [Q, K + 1].
- ``inbatch``: the batch's own items are the candidates, corrected by their log-popularity (the probability an
  item is in a batch grows with it): :mod:`modalrec.losses.inbatch`, ODMT's debiased in-batch softmax, as is
  (distinct item columns with their occurrence counts; the user's own other items masked). Memory [Q, distinct
  items of the batch].

The negatives come from the torch RNG the trainer seeds and checkpoints, so training stays reproducible and resume
exact. Under DDP each rank draws its own negatives (and ``inbatch`` sees its own shard only): per-rank estimates
whose gradients are averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ParamError
from .inbatch import build_candidates, inbatch_ce, inbatch_logits, log_popularity

KINDS = ("full", "sampled", "inbatch")
SAMPLING = ("uniform", "popularity")


def sampled_softmax_ce(queries: Tensor, table: Tensor, targets: Tensor, negatives: Tensor,
                       log_q: Tensor | None) -> Tensor:
    """Mean cross-entropy of ``targets [Q]`` among ``[target, *negatives]`` for ``queries [Q, d]``.

    ``table [N+1, d]`` item vectors, ``negatives [K]`` item ids shared by every query (drawn from q), ``log_q
    [N+1]`` the log proposal probabilities: every negative's logit is corrected by ``- log(K q_j)`` (None: no
    correction, the plain sampled softmax). Logits in float32.
    """
    with torch.autocast(queries.device.type, enabled=False):
        q = queries.float()
        pos = (q * table[targets].float()).sum(-1, keepdim=True)  # [Q, 1]
        neg = q @ table[negatives].float().T  # [Q, K]
        if log_q is not None:
            neg = neg - (log_q[negatives] + math.log(len(negatives))).unsqueeze(0)
        neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # accidental hits
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=q.device))


class OutputLoss:
    """The replacement of a model's full softmax (set by the trainer through ``model.set_output_loss``).

    ``counts [M]``: item occurrences in the training windows (extended with zeros to the table's N+1 rows).
    Called as ``loss(queries [Q, d], table [N+1, d], targets [Q], input_ids, all_targets)`` where the queries are
    the positions ``all_targets > 0`` in row-major order (what ``h[targets > 0]`` gives).
    """

    def __init__(self, kind: str, num_negatives: int = 1000, sampling: str = "popularity",
                 counts: np.ndarray | None = None):
        if kind not in ("sampled", "inbatch"):
            raise ParamError("train.loss", f"must be one of {KINDS}, got {kind!r}")
        if sampling not in SAMPLING:
            raise ParamError("train.sampling", f"must be one of {SAMPLING}, got {sampling!r}")
        if int(num_negatives) < 1:
            raise ParamError("train.num_negatives", "must be >= 1")
        self.kind, self.k, self.sampling = kind, int(num_negatives), sampling
        self.counts = np.zeros(1, np.float64) if counts is None else np.asarray(counts, np.float64)
        self._cache: tuple | None = None  # (rows, device) -> (log_q, cdf)

    def _proposal(self, n_rows: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._cache is None or self._cache[0] != (n_rows, device):
            c = np.zeros(n_rows, np.float64)
            m = min(n_rows, len(self.counts))
            c[:m] = self.counts[:m]
            if self.kind == "inbatch":
                log_q = log_popularity(torch.from_numpy(c))
                cdf = torch.zeros(0)
            else:
                w = np.ones(n_rows) if self.sampling == "uniform" else c + 1.0
                w[0] = 0.0  # never the padding item
                p = w / w.sum()
                with np.errstate(divide="ignore"):
                    log_q = torch.from_numpy(np.log(p)).float()
                cdf = torch.from_numpy(np.cumsum(p)).to(torch.float64)
                cdf[-1] = 1.0
            self._cache = ((n_rows, device), log_q.to(device), cdf.to(device))
        return self._cache[1], self._cache[2]

    def sample(self, n_rows: int, device: torch.device) -> Tensor:
        """``K`` negative item ids in 1..N from the proposal (inverse CDF of one uniform draw each)."""
        _, cdf = self._proposal(n_rows, device)
        u = torch.rand(self.k, dtype=torch.float64, device=device)
        return torch.searchsorted(cdf, u, right=True).clamp_(1, n_rows - 1)

    def __call__(self, queries: Tensor, table: Tensor, targets: Tensor, input_ids: Tensor,
                 all_targets: Tensor) -> Tensor:
        log_q, _ = self._proposal(table.shape[0], table.device)
        if self.kind == "inbatch":
            cand = build_candidates(input_ids, all_targets)
            with torch.autocast(queries.device.type, enabled=False):
                z = inbatch_logits(queries, table[cand.col_items], cand, log_q)
            return inbatch_ce(z, cand)
        return sampled_softmax_ce(queries, table, targets, self.sample(table.shape[0], table.device), log_q)
