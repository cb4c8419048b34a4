"""Learnability probes of the synthetic catalogue (:mod:`modalrec.data.synthetic`), used by tests and benchmarks only.

Do the item attributes the generator plants predict the next item better than item identities, especially for rare
items (:func:`learnability_check`, count-based predictors)? Do content vectors of a sample of items see those
attributes (:func:`attribute_knn_agreement`, nearest neighbours; :func:`attribute_probe_accuracy`, a linear probe)?
Figures in ``docs/synthetic.md`` (from ``benchmarks/synthetic.py``). Kept apart from the generator, so editing a
probe does not rerun the prepare stage, which depends on the generator's file only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..errors import ParamError


@dataclass
class LearnabilityResult:
    """HR@k / NDCG@k of three count-based next-item predictors on the last ``test_frac`` of every sequence."""

    k: int
    n_test: int
    n_test_rare: int                 # test targets seen fewer than ``rare_max`` times in training
    rare_max: int
    metrics: dict[str, dict[str, float]]   # predictor -> {"hr", "ndcg", "hr_rare", "ndcg_rare"}

    def lines(self) -> list[str]:
        out = [f"next-item predictors on the last 20% of each sequence (n_test={self.n_test}, rare targets "
               f"[< {self.rare_max} train occurrences]={self.n_test_rare}):"]
        for name, m in self.metrics.items():
            out.append(f"  {name:<12} HR@{self.k}={m['hr']:.4f} NDCG@{self.k}={m['ndcg']:.4f} | rare: "
                       f"HR@{self.k}={m['hr_rare']:.4f} NDCG@{self.k}={m['ndcg_rare']:.4f}")
        return out


def item_sequences(interactions: pl.DataFrame, item_index: dict[str, int]) -> list[np.ndarray]:
    """Every user's item sequence (row indices of ``item_index``), in time order (``timestamp``, then ``order``)."""
    df = interactions.sort(["user_orig", "timestamp", "order"])
    idx = np.asarray([item_index[s] for s in df["item_orig"].to_list()], dtype=np.int64)
    users = df["user_orig"].to_numpy()
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return np.split(idx, cuts)


def learnability_check(interactions: pl.DataFrame, attributes: pl.DataFrame, test_frac: float = 0.2,
                       k: int = 10, rare_max: int = 5, smoothing: float = 0.5, history: int = 20,
                       cooc_weight: float = 1.0) -> LearnabilityResult:
    """Compare an item-level predictor (item bigram + popularity back-off) with an attribute-level one.

    Split as the ``ratio`` split does: per user the first ``1 - test_frac`` of the sequence is training, each later
    position is a test instance whose history is the true prefix. Predictors, all fitted on training parts only:

    - ``popularity``: training item counts.
    - ``item_bigram``: counts of (previous item -> item) pairs, backed off to popularity (what an ID-only model can
      learn at best from the last item; hopeless for items rarely seen in training).
    - ``item_cooc``: the bigram scores plus item co-occurrence with each of the last ``history`` items (item-kNN;
      a user's taste from the whole history, still only item identities).
    - ``attribute``: P(category | previous category) x P(colour | user's history) x P(material | user's history) x
      P(item | its cell) with add-``smoothing`` counts (what a model that sees the content can learn).

    Memory is O(N + #distinct bigrams); scoring is O(N) per test instance.
    """
    if not 0.0 < test_frac < 1.0:
        raise ParamError("test_frac", f"must be in (0, 1), got {test_frac}")
    item_index = {s: i for i, s in enumerate(attributes["item_orig"].to_list())}
    N = len(item_index)
    cat = attributes["category"].to_numpy().astype(np.int64)
    col = attributes["colour"].to_numpy().astype(np.int64)
    mat = attributes["material"].to_numpy().astype(np.int64)
    n_cat, n_col, n_mat = int(cat.max()) + 1, int(col.max()) + 1, int(mat.max()) + 1
    seqs = item_sequences(interactions, item_index)
    n_trains = [max(1, int(math.floor(len(s) * (1.0 - test_frac)))) for s in seqs]

    counts = np.zeros(N)
    prev, nxt = [], []
    for s, nt in zip(seqs, n_trains):
        np.add.at(counts, s[:nt], 1)
        prev.append(s[: nt - 1])
        nxt.append(s[1:nt])
    prev_a, nxt_a = np.concatenate(prev), np.concatenate(nxt)
    # Sparse bigram table as sorted pair codes.
    codes, bcounts = np.unique(prev_a * N + nxt_a, return_counts=True)
    row_ptr = np.searchsorted(codes, np.arange(N + 1) * N)
    # Symmetric within-sequence co-occurrence (item-kNN on the training parts): captures a user's taste from the
    # whole history, still at the level of item identities.
    co = []
    for s_, nt in zip(seqs, n_trains):
        t = s_[:nt]
        a_, b_ = np.meshgrid(t, t, indexing="ij")
        off = ~np.eye(len(t), dtype=bool)
        co.append(a_[off] * N + b_[off])
    co_codes, co_counts = np.unique(np.concatenate(co), return_counts=True) if co else (np.zeros(0, np.int64),) * 2
    co_ptr = np.searchsorted(co_codes, np.arange(N + 1) * N)
    cat_trans = np.full((n_cat, n_cat), smoothing)
    np.add.at(cat_trans, (cat[prev_a], cat[nxt_a]), 1)
    cat_trans /= cat_trans.sum(1, keepdims=True)
    cell = (cat * n_col + col) * n_mat + mat
    cell_tot = np.bincount(cell, weights=counts + smoothing, minlength=n_cat * n_col * n_mat)
    p_item_in_cell = (counts + smoothing) / cell_tot[cell]
    pop = (counts + smoothing) / (counts.sum() + smoothing * N)

    names = ["popularity", "item_bigram", "item_cooc", "attribute"]
    hits = {n: [] for n in names}
    gains = {n: [] for n in names}
    rare = []

    def rank_of(score: np.ndarray, target: int) -> int:
        # Pessimistic ties: count items scoring >= the target's score, excluding the target itself.
        return int((score >= score[target]).sum()) - 1

    for s, nt in zip(seqs, n_trains):
        for p in range(nt, len(s)):
            hist, target, last = s[:p], int(s[p]), int(s[p - 1])
            scores = {"popularity": pop}
            bg = pop * 1e-3
            bg = bg.copy()
            a, b = row_ptr[last], row_ptr[last + 1]
            bg[codes[a:b] - last * N] += bcounts[a:b]
            scores["item_bigram"] = bg
            cs = bg.copy()
            for h in hist[-history:]:
                a, b = co_ptr[h], co_ptr[h + 1]
                cs[co_codes[a:b] - h * N] += cooc_weight * co_counts[a:b] / (counts[h] + 1.0)
            scores["item_cooc"] = cs
            pc = np.bincount(col[hist], minlength=n_col) + smoothing
            pm = np.bincount(mat[hist], minlength=n_mat) + smoothing
            scores["attribute"] = (cat_trans[cat[last]][cat] * (pc / pc.sum())[col] * (pm / pm.sum())[mat]
                                   * p_item_in_cell)
            for n in names:
                r = rank_of(scores[n], target)
                hits[n].append(r < k)
                gains[n].append(1.0 / math.log2(r + 2) if r < k else 0.0)
            rare.append(counts[target] < rare_max)

    rare_a = np.asarray(rare)
    metrics = {}
    for n in names:
        h, g = np.asarray(hits[n], dtype=float), np.asarray(gains[n])
        metrics[n] = {"hr": float(h.mean()), "ndcg": float(g.mean()),
                      "hr_rare": float(h[rare_a].mean()) if rare_a.any() else float("nan"),
                      "ndcg_rare": float(g[rare_a].mean()) if rare_a.any() else float("nan")}
    return LearnabilityResult(k=k, n_test=len(rare_a), n_test_rare=int(rare_a.sum()), rare_max=rare_max,
                              metrics=metrics)


def attribute_knn_agreement(vectors: np.ndarray, attributes: pl.DataFrame, k: int = 5,
                            columns: tuple[str, ...] = ("category", "colour", "material")
                            ) -> dict[str, dict[str, float]]:
    """Do content vectors see the latent attributes? Share of each item's ``k`` cosine nearest neighbours (itself
    excluded) with the same attribute value, against chance (the probability that a random other item shares it).

    ``vectors`` [n, d] are rows aligned with ``attributes``; memory O(n^2) only for the sample given (a few hundred).
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    out: dict[str, dict[str, float]] = {}
    all_same = np.ones(nn.shape, dtype=bool)
    chance_all = np.ones(len(x))
    for c in columns:
        v = attributes[c].to_numpy()
        same = v[nn] == v[:, None]
        all_same &= same
        freq = np.bincount(v, minlength=int(v.max()) + 1)
        chance = (freq[v] - 1) / (len(v) - 1)
        chance_all *= chance
        out[c] = {"knn": float(same.mean()), "chance": float(chance.mean())}
    out["all"] = {"knn": float(all_same.mean()), "chance": float(chance_all.mean())}
    return out


def attribute_probe_accuracy(vectors: np.ndarray, attributes: pl.DataFrame, seed: int = 0, ridge: float = 10.0,
                             columns: tuple[str, ...] = ("category", "colour", "material")) -> dict[str, float]:
    """Is each attribute *linearly* decodable from the content vectors (what a learned projection can use)?

    A ridge one-vs-rest probe fitted on a random half of the rows, accuracy on the other half (kernel form, so the
    cost is O(n^2) in the sample size, never in the catalogue size).
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    idx = np.random.default_rng(seed).permutation(len(x))
    tr, te = idx[: len(x) // 2], idx[len(x) // 2:]
    gram = x[tr] @ x[tr].T + ridge * np.eye(len(tr))
    out = {}
    for c in columns:
        y = attributes[c].to_numpy()
        onehot = np.eye(int(y.max()) + 1)[y[tr]]
        pred = np.argmax(x[te] @ (x[tr].T @ np.linalg.solve(gram, onehot)), axis=1)
        out[c] = float((pred == y[te]).mean())
    return out

