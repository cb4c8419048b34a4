"""Correlation Distillation Learning (KDSR §3.2, Eq. 2-5): the student side of KDSR, for any backbone.

The teacher (:mod:`modalrec.teacher.teacher`) knows, for any pair of items, the holistic correlation
``r_ij = ξ(m̃_i, m̃_j)`` of their AE codes and the dissected correlation code ``c_ij`` (the nearest of x codewords of
the D per-part correlations). The student makes the *trainable* modality tables ``E`` (``model.modality_tables()``)
keep those correlations while the recommender fine-tunes them:

- holistic: ``r̂_ij = ξ(g_φ(e_i), g_φ(e_j))`` against ``r_ij``, g_φ one Linear (``proj_layers: 2`` keeps the released
  code's two stacked Linear layers). Two loss forms, because paper and code differ (paper-notes §4.1 K2):

  * ``frobenius`` (released code): per sequence ``sqrt(Σ_valid (r̂_ij − r_ij)² / τ² + 1e-8)``, averaged over the
    batch's sequences. τ is only a scale here.
  * ``soft_match`` (the paper's Eq. 3 read with σ a softmax): a temperature-τ softmax over j of each row (within
    the sequence's valid pairs) for teacher and student, then the squared error averaged over valid pairs. Each
    probability is ~1/U, so the loss and its gradient shrink like 1/U²: numerically inert for long sequences
    (docs/kdsr.md, "Loss-term sizes").
  * ``sigmoid_match`` (Eq. 3 read with σ the logistic function, "1/N² Σ_ij"): the squared error of σ(r̂_ij/τ) and
    σ(r_ij/τ) averaged over the batch's ordered pairs; a per-pair mean, so its size does not depend on U.
- dissected: ``p = W_out(ReLU(W_c |e_i − e_j|))`` (x logits) trained with cross-entropy against ``c_ij``, averaged
  over valid pairs; it reads the supervised embeddings directly (no g_φ), as in the code. ``code_pairs`` caps the
  i < j pairs that go through this head per batch (a uniform sample, weighted to estimate the mean over all pairs;
  0 = all): with long histories a batch has ~60k pairs (ML-100K) and the head's products dominate a step.

**What is supervised**: the rows ``e_i`` of the batch's unique items come from ``rows(m, items)`` when the caller
gives it (KDSR passes the representation its backbone scores with, e.g. the standardised, projected table of an
ItemRepr backbone), else from the raw trainable table.

**Which pairs** (K5): all ordered pairs of the *unique* items of each training sequence (padding masked), with the
diagonal i = j included as the released code does (``diagonal: false`` drops it). Never N×N: one sort of the batch
gives every sequence's unique items as one flat list (:func:`sequence_pairs`), and the losses work on the list of
pairs i ≤ j of the same sequence, O(Σ_b U_b²) with U_b ≤ the batch's longest sequence. The teacher's correlations
are symmetric, so only pairs i ≤ j are looked up and pushed through the code head, with weight 2 for i < j: exactly
the mean over ordered pairs at half the cost. A diagonal pair's code-head input ``|e_i − e_i|`` is 0, so its logits
are computed once; ``soft_match`` mirrors the i < j pairs to normalise each row. The dense ``[B, U, U]`` forms
(:func:`pair_mask`, :func:`frobenius_loss`, :func:`soft_match_loss`) stay as the readable reference the tests
compare with.

**Cost** (``benchmarks/kdsr.py``, docs/kdsr.md): on CPU, CDL's time is the code head's six matrix products (~0.75
GFLOP a step at batch 64, near the CPU's float32 peak), passes over ``[M, P, d]`` temporaries and per-operation
overhead. So every modality is computed at once (stacked ``[M, ...]`` tensors, batched products, one pair cache);
each table is read once per batch, at the batch's K unique items, for both losses, and the gradients of the pairs'
ends are summed back onto those K rows (:func:`pair_row_sums`: one sparse incidence product on CPU), not scattered
into the table pair by pair; the student's holistic scores come from per-sequence Gram blocks (``[B, U, U]``
scalars, U ≤ the longest sequence: K rows moved instead of 2·P, the cos normalisation inside); and the code head and
the soft-match loss are single autograd nodes with hand-written backwards (:func:`code_head_nll`,
:func:`soft_match_pairs`). On long histories the Frobenius loss skips the pair list altogether
(:meth:`CDL.uses_blocks`, :func:`frobenius_blocks`): it compares the per-sequence ``[U, U]`` blocks of the student's
scores with the teacher's (``holistic_block``, one product per sequence), and the teacher is asked only about the
code head's sampled pairs. :func:`code_head_nll_reference`, :func:`soft_match_pairs_reference` and :func:`pair_xi`
are the plain-autograd definitions the tests compare values and gradients with.

**Layout**: this file holds the loss (:class:`CDLConfig`, :class:`CDL` and the losses on pair lists it calls);
:mod:`.pairs` the pair indexing (:func:`sequence_pairs`), :mod:`.functions` the hand-written autograd nodes,
:mod:`.reference` the dense and plain-autograd definitions the tests compare with, :mod:`.batched` the table
rows and the stacked g_φ, :mod:`.cache` the :class:`PairCache`, :mod:`.teacher_api` how a teacher is asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ParamError
from ...teacher.correlation import normalise_xi
from .batched import stacked_linear, stacked_module, table_rows
from .cache import PairCache
from .functions import BlockGram, CodeHeadNLL, SoftMatch, pair_row_sums
from .pairs import SequencePairs, sequence_pairs, unique_items
from .reference import (code_head_nll_reference, frobenius_loss, pair_mask, pairwise_xi, sigmoid_match_loss,
                        soft_match_loss, soft_match_pairs_reference, upper_pairs)
from .teacher_api import has_holistic_block, teacher_attr, teacher_lookup, teacher_n_codes

__all__ = ["CDL", "CDLConfig", "HOLISTIC_LOSSES", "PairCache", "SequencePairs", "block_xi", "code_head_nll",
           "code_head_nll_reference", "frobenius_blocks", "frobenius_loss", "frobenius_pairs", "pair_mask",
           "pair_row_sums", "pair_xi", "pairwise_xi", "sequence_pairs", "sigmoid_match_loss", "sigmoid_match_pairs",
           "soft_match_loss", "soft_match_pairs", "soft_match_pairs_reference",
           "stacked_linear", "stacked_module", "table_rows", "teacher_attr", "teacher_lookup", "teacher_n_codes",
           "unique_items", "upper_pairs"]


HOLISTIC_LOSSES = ("frobenius", "soft_match", "sigmoid_match")
NORMS = ("rows", "pairs")


@dataclass
class CDLConfig:
    modalities: list[str] = field(default_factory=lambda: ["image", "text"])
    # modality -> [λ_S (holistic), λ_C (code)]: paper Amazon (1, 0.5); ML-1M (0.5, 0.1);
    # released-code parity img (4, 4) txt (0.5, 0.5)
    weights: dict[str, list[float]] = field(default_factory=lambda: {"image": [1.0, 0.5], "text": [1.0, 0.5]})
    tau: float = 1.5
    holistic_loss: str = "soft_match"  # soft_match (row softmax) | sigmoid_match (Eq. 3, logistic σ) | frobenius (code)
    diagonal: bool = True  # include pairs (i, i) as the released code does
    proj_layers: int = 1  # g_φ: 1 Linear (paper) | 2 stacked Linear layers (released code)
    xi: str | None = None  # student's scoring function; None = the teacher's
    teacher_cache: int = 4_000_000  # item pairs whose teacher answers (all modalities) are kept across batches; 0 = off
    code_pairs: int = 0  # most i < j pairs through the code head per batch (uniform sample while training); 0 = all
    # how the code loss (and sigmoid_match) are averaged: "rows" = the mean over the batch's rows (each sequence's
    # unique items) of a row's sum over its partners, "pairs" = the mean over ordered pairs (released code); see
    # docs/kdsr.md, "Loss-term sizes": over pairs, a term's gradient on a table row shrinks like 1/U
    norm: str = "pairs"

    def validate(self, key: str = "models.<name>") -> None:
        if self.holistic_loss not in HOLISTIC_LOSSES:
            raise ParamError(f"{key}.holistic_loss", f"must be one of {HOLISTIC_LOSSES}, got {self.holistic_loss!r}")
        if self.norm not in NORMS:
            raise ParamError(f"{key}.norm", f"must be one of {NORMS}, got {self.norm!r}")
        if not self.tau > 0:
            raise ParamError(f"{key}.tau", f"must be > 0, got {self.tau}")
        if self.proj_layers not in (1, 2):
            raise ParamError(f"{key}.proj_layers", f"must be 1 or 2, got {self.proj_layers}")
        if self.xi is not None:
            normalise_xi(self.xi, f"{key}.xi")
        for name in ("teacher_cache", "code_pairs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ParamError(f"{key}.{name}", f"must be an integer >= 0, got {v!r}")
        for m in self.modalities:
            w = self.weights.get(m)
            if w is None or len(w) != 2:
                raise ParamError(f"{key}.weights.{m}", "needs [holistic_weight, code_weight] for every modality")
            if min(float(v) for v in w) < 0:
                raise ParamError(f"{key}.weights.{m}", f"weights must be >= 0, got {w}")
        extra = sorted(set(self.weights) - set(self.modalities))
        if extra:
            raise ParamError(f"{key}.weights.{extra[0]}", f"not one of the modalities {self.modalities}")


class CDL(nn.Module):
    """The student heads and losses for every supervised modality. ``forward(input_ids, tables)`` returns a dict
    ``{"cdl": weighted total, "cdl/<modality>_holistic": ..., "cdl/<modality>_code": ...}`` (unweighted parts).

    All modalities are computed together (stacked ``[M, ...]`` tensors, batched matrix products; see the package
    docstring on cost)."""

    def __init__(self, cfg: CDLConfig, teacher: Any, dim: int = 128, n_codes: int | None = None,
                 key: str = "models.<name>"):
        super().__init__()
        cfg.validate(key)
        if teacher is None:
            raise ParamError(f"{key}.arch", "KDSR needs the distill stage's teacher (models/<ds>/teacher)")
        self.cfg = cfg
        self.__dict__["teacher"] = teacher  # not a submodule: it is the distill stage's output, not a parameter
        self.xi = normalise_xi(cfg.xi or teacher_attr(teacher, "xi", "cos"), f"{key}.xi")
        self.weights = {m: (float(cfg.weights[m][0]), float(cfg.weights[m][1])) for m in cfg.modalities}
        self.proj = nn.ModuleDict()
        self.code_head = nn.ModuleDict()
        for m in cfg.modalities:
            hol, code = self.weights[m]
            if hol > 0:
                layers = [nn.Linear(dim, dim) for _ in range(cfg.proj_layers)]
                self.proj[m] = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
            if code > 0:
                x = n_codes if n_codes is not None else teacher_n_codes(teacher, m)
                self.code_head[m] = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, int(x)))
        self.hol_mods = [m for m in cfg.modalities if m in self.proj]
        self.code_mods = [m for m in cfg.modalities if m in self.code_head]
        # code heads batch together when their codebooks have the same size (always, with one kdsr.codes)
        groups: dict[int, list[str]] = {}
        for m in self.code_mods:
            groups.setdefault(self.code_head[m][-1].out_features, []).append(m)
        self.code_groups = list(groups.values())
        # the Frobenius loss can take a block form (:meth:`uses_blocks`): needs products on the student's side
        # and a teacher that answers blocks
        self.block_holistic = (bool(self.hol_mods) and cfg.holistic_loss == "frobenius" and self.xi in ("cos", "dot")
                               and has_holistic_block(teacher))
        self.need = (bool(self.hol_mods), bool(self.code_mods))  # what the pair cache keeps
        self.cache = PairCache(cfg.teacher_cache)  # one cache, the answers of every modality side by side

    def _teacher(self, device: torch.device) -> Any:
        t = self.teacher
        if hasattr(t, "to") and teacher_attr(t, "device", device) != device:
            moved = t.to(device)
            self.__dict__["teacher"] = t = moved if moved is not None else t
        return t

    def _ask(self, teacher: Any, i: Tensor, j: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The teacher's answers for item pairs: ``holistic [n, len(hol_mods)]``, ``codes [n, len(code_mods)]``."""
        hol, codes = {}, {}
        for m in dict.fromkeys(self.hol_mods + self.code_mods):
            hol[m], codes[m] = teacher_lookup(teacher, i, j, m, m in self.proj, m in self.code_head)
        h = torch.stack([hol[m].float() for m in self.hol_mods], 1) if self.hol_mods else None
        c = torch.stack([codes[m].long() for m in self.code_mods], 1) if self.code_mods else None
        return h, c

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, device: torch.device | None = None, chunk: int = 2048) -> int:
        """Ask the teacher, once, about every pair the sequences ``input_ids [W, L]`` (all training windows) will
        supervise, and cache the answers (up to ``teacher_cache`` pairs): the first epoch then costs what every
        later one does, and the teacher sees each pair once, in large batches. Returns the number of cached pairs."""
        if self.cache.max_pairs <= 0:
            return 0
        device = torch.device(device) if device is not None else input_ids.device
        teacher = self._teacher(device)
        need = self.need
        for s in range(0, input_ids.shape[0], chunk):
            if len(self.cache) >= self.cache.max_pairs:
                break  # full: the remaining pairs are asked for batch by batch
            pairs = sequence_pairs(input_ids[s:s + chunk].to(device), self.cfg.diagonal)
            ii, jj = pairs.items.index_select(0, pairs.i), pairs.items.index_select(0, pairs.j)
            self.cache.add(ii, jj, lambda a, b: self._ask(teacher, a, b), need)
        self.cache.compact()
        return len(self.cache)

    BLOCK_RATIO = 4  # the block form when a batch's B·U² block entries are at most this many times its pairs

    def uses_blocks(self, pairs: SequencePairs) -> bool:
        """Whether the Frobenius loss of this batch is computed on per-sequence ``[U, U]`` blocks of the student's
        and the teacher's scores (:func:`frobenius_blocks`) instead of on the list of its pairs. The blocks have
        B·U² entries (U = the most unique items of a sequence), the list P: long histories fill their blocks
        (MovieLens-100K: ~160k entries for ~58k pairs a batch) and the blocks save the pairs' gathers, scatters and
        teacher lookups; short windows of unequal lengths do not (the synthetic default: ~34k entries for ~2k
        pairs), so they keep the pair list. Both give the same loss up to float rounding (tested)."""
        return self.block_holistic and pairs.n_seq * pairs.width ** 2 <= self.BLOCK_RATIO * pairs.n_pairs

    def forward(self, input_ids: Tensor, tables: dict[str, nn.Embedding],
                rows_fn: Callable[[str, Tensor], Tensor] | None = None, keep_terms: bool = False) -> dict[str, Tensor]:
        """``rows_fn(m, items) -> [K, d]``: the supervised representation of the items (default: the raw table's
        rows). ``keep_terms``: also return ``"terms"``, the weighted terms with their graphs (for gradient sizes)."""
        for m in self.cfg.modalities:
            if m not in tables:
                raise ParamError("models.<name>.modalities", f"the backbone has no trainable {m!r} table")
        pairs = sequence_pairs(input_ids, self.cfg.diagonal)
        items = pairs.items
        teacher = self._teacher(items.device)
        ask = lambda a, b: self._ask(teacher, a, b)  # noqa: E731
        blocks = self.uses_blocks(pairs)
        if not blocks:  # every pair's answers (in block form: the code head's pairs' only, below)
            ii, jj = items.index_select(0, pairs.i), items.index_select(0, pairs.j)
            r, target = self.cache.get(ii, jj, ask, self.need)
        out: dict[str, Tensor] = {}
        terms: list[Tensor] = []
        # every modality's rows of the batch's distinct items (an item in several sequences once: long histories
        # repeat items across a batch), gathered once for both losses (sparse table gradients), then per sequence
        uniq, inv = torch.unique(items, return_inverse=True)
        rows_u = {m: table_rows(tables[m].weight, uniq) if rows_fn is None else rows_fn(m, uniq)
                  for m in dict.fromkeys(self.hol_mods + self.code_mods)}
        weighted: dict[str, Tensor] = {}
        stacked: dict[tuple[str, ...], Tensor] = {}

        def stack(mods: list[str]) -> Tensor:  # [M, K, d], shared when both losses use the same modalities
            key = tuple(mods)
            if key not in stacked:
                stacked[key] = torch.stack([rows_u[m] for m in mods]).index_select(1, inv)
            return stacked[key]

        if self.hol_mods:  # holistic: ξ(g_φ(e_i), g_φ(e_j)) against the teacher's ξ(m̃_i, m̃_j), all at once
            Z = stacked_module(torch.stack([rows_u[m] for m in self.hol_mods]),
                               [self.proj[m] for m in self.hol_mods]).index_select(1, inv)  # g_φ once per item
            if blocks:  # [M, B, U, U] blocks of both sides
                S = BlockGram.apply(Z.float(), pairs.slot, None, pairs.n_seq, pairs.width, self.xi == "cos")
                T = torch.stack([teacher.holistic_block(pairs.block_items, m) for m in self.hol_mods])
                parts = frobenius_blocks(S, T.to(device=S.device, dtype=S.dtype), pairs, self.cfg.tau,
                                         self.cfg.diagonal)
            else:
                r_hat = block_xi(Z.float(), pairs, self.xi)  # [M, P]
                r = r.to(device=r_hat.device, dtype=r_hat.dtype).t()
                loss = {"frobenius": frobenius_pairs, "soft_match": soft_match_pairs,
                        "sigmoid_match": sigmoid_match_pairs}[self.cfg.holistic_loss]
                parts = loss(r_hat, r, pairs, self.cfg.tau)  # [M]
            if self.cfg.holistic_loss == "sigmoid_match" and self.cfg.norm == "rows":
                parts = parts * (pairs.weight.sum() / max(items.shape[0], 1))  # the pair mean -> the row mean
            for m, v in zip(self.hol_mods, parts.detach().unbind()):
                out[f"cdl/{m}_holistic"] = v
            w = parts * parts.new_tensor([self.weights[m][0] for m in self.hol_mods])
            weighted.update({f"{m}_holistic": w[k] for k, m in enumerate(self.hol_mods)})
            terms.append(w.sum())
        if self.code_mods:
            col = {m: k for k, m in enumerate(self.code_mods)}
            n_off, n_diag = pairs.n_off, pairs.n_diag
            idx, w_off = None, 2.0
            cap = self.cfg.code_pairs
            if self.training and 0 < cap < n_off:  # a uniform sample of the i < j pairs, weighted to stand for all
                idx = torch.randperm(n_off, device=items.device)[:cap].sort().values
                w_off = 2.0 * n_off / cap
            if blocks:  # no pair lists: the sampled pairs' ends by arithmetic, the answers of these pairs only
                ia, ib = pairs.off_pairs(idx if idx is not None else torch.arange(n_off, device=items.device))
                diag = items if n_diag else items[:0]
                _, target = self.cache.get(torch.cat([items.index_select(0, ia), diag]),
                                           torch.cat([items.index_select(0, ib), diag]), ask, self.need)
                at_off = torch.arange(ia.shape[0], device=items.device)
                at_diag = torch.arange(ia.shape[0], ia.shape[0] + n_diag, device=items.device)
            else:
                off = pairs.off if idx is None else pairs.off.index_select(0, idx)
                ia, ib = pairs.i.index_select(0, off), pairs.j.index_select(0, off)
                at_off, at_diag = off, pairs.diag
            target = target.to(device=items.device, dtype=torch.long)
            for group in self.code_groups:
                heads = [self.code_head[m] for m in group]
                t = target[:, [col[m] for m in group]].t()  # [M, pairs asked]
                ce = code_head_nll(stack(group), ia, ib, heads, t.index_select(1, at_off), t.index_select(1, at_diag),
                                   w_off)
                parts = ce / max(2 * n_off + n_diag if self.cfg.norm == "pairs" else items.shape[0], 1)
                for m, v in zip(group, parts.detach().unbind()):
                    out[f"cdl/{m}_code"] = v
                w = parts * parts.new_tensor([self.weights[m][1] for m in group])
                weighted.update({f"{m}_code": w[k] for k, m in enumerate(group)})
                terms.append(w.sum())
        order = [f"cdl/{m}_{k}" for m in self.cfg.modalities for k in ("holistic", "code")]
        out = {k: out[k] for k in order if k in out}
        out["cdl"] = sum(terms[1:], terms[0]) if terms else input_ids.new_zeros((), dtype=torch.float32)
        if keep_terms:
            out["terms"] = weighted  # type: ignore[assignment]
        return out


def frobenius_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`frobenius_loss` on the i ≤ j pair lists ``[..., P]`` (leading dims: e.g. one row per modality, the
    result has their shape): each i < j pair stands for both orders (weight 2)."""
    sq = (r_hat - r).pow(2) * (pairs.weight / tau**2)
    per_seq = sq.new_zeros(*sq.shape[:-1], pairs.n_seq).index_add(sq.dim() - 1, pairs.pair_seq, sq)
    has = pairs.has_pairs
    if not bool(has.any()):
        return r_hat.sum(-1) * 0
    return torch.sqrt(per_seq[..., has] + 1e-8).mean(-1)


def frobenius_blocks(S: Tensor, T: Tensor, pairs: SequencePairs, tau: float, diagonal: bool = True) -> Tensor:
    """:func:`frobenius_pairs` on the per-sequence blocks ``S, T [M, B, U, U]`` of student and teacher scores
    (:class:`BlockGram` with ``flat`` None; the teacher's ``holistic_block``), result ``[M]``: a sequence's sum over
    its ordered pairs is the sum over its block, since both are symmetric and the padding slots are 0 on the
    student's side and masked on the teacher's. No list of pairs: O(B·U²) whatever the histories' lengths."""
    valid = pairs.block_items > 0
    T = T.masked_fill(~(valid.unsqueeze(-1) & valid.unsqueeze(-2)), 0.0)
    d = S - T
    if not diagonal:
        d = d * (1 - torch.eye(d.shape[-1], dtype=d.dtype, device=d.device))
    per_seq = d.pow(2).sum((-2, -1)) / tau**2  # [M, B]
    has = pairs.has_pairs
    if not bool(has.any()):
        return S.sum((-3, -2, -1)) * 0
    return torch.sqrt(per_seq[:, has] + 1e-8).mean(-1)


def sigmoid_match_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`~.reference.sigmoid_match_loss` on the pair lists ``[..., P]`` (result: the leading shape): the mean
    over the batch's ordered pairs (weight 2 for each i < j pair) of ``(σ(r̂/τ) − σ(r/τ))²``."""
    d = (torch.sigmoid(r_hat / tau) - torch.sigmoid(r.detach() / tau)).pow(2) * pairs.weight
    return d.sum(-1) / pairs.weight.sum().clamp(min=1)


def soft_match_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`soft_match_loss` on the pair lists ``[..., P]`` (result: the leading shape): the i < j pairs are
    mirrored to get every ordered pair, then a softmax over each row (b, i), for student and teacher in one go, and
    the squared error averaged over the ordered pairs. The teacher's ``r`` is a constant (no gradient); the
    backward is written by hand (:class:`SoftMatch`; :func:`soft_match_pairs_reference` is the autograd form)."""
    lead, P = r_hat.shape[:-1], r_hat.shape[-1]
    G = math.prod(lead)
    out = SoftMatch.apply(r_hat.reshape(G, P), r.detach().expand_as(r_hat).reshape(G, P), pairs.off, pairs.rows,
                           pairs.items.shape[0], float(tau))
    return out.reshape(lead)


def block_xi(z: Tensor, pairs: SequencePairs, xi: str) -> Tensor:
    """:func:`pair_xi` of ``pairs`` for ``z [M, K, d]`` (K = the batch's unique items), by one batched product
    per sequence: the rows go to a padded ``[M·B, U, d]`` layout, ``[M·B, U, U]`` scores are formed and the pairs
    read from them. Moves K rows, not the 2·P rows a per-pair gather reads (and its backward writes back);
    the score blocks (B·U² scalars, U ≤ the batch's longest sequence) are far smaller than ``[P, d]``.
    Products only (cos, dot; cos normalises the rows inside the same node); distances go through :func:`pair_xi`."""
    if xi not in ("cos", "dot"):
        return pair_xi(z, pairs.i, pairs.j, xi)
    return BlockGram.apply(z, pairs.slot, pairs.flat, pairs.n_seq, pairs.width, xi == "cos")


def pair_xi(z: Tensor, i: Tensor, j: Tensor, xi: str) -> Tensor:
    """``[..., P]`` scores ξ(z_i, z_j) of the listed row pairs of ``z [..., K, d]`` (the definitions of
    :func:`pairwise_xi`; a distance of a row to itself is exactly 0, with gradient 0)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
    dim = z.dim() - 2  # (index_select: a much faster backward than z[..., i, :] on CPU)
    zi, zj = z.index_select(dim, i), z.index_select(dim, j)
    if xi in ("cos", "dot"):
        return (zi * zj).sum(-1)
    d = zi - zj
    return torch.linalg.vector_norm(d, ord=2 if xi == "euclidean" else 1, dim=-1)


def code_head_nll(E: Tensor, ia: Tensor, ib: Tensor, heads: list[nn.Module], t_off: Tensor,
                  t_diag: Tensor, w_off: float = 2.0) -> Tensor:
    """The dissected loss of every modality of a group, before averaging: ``[M]`` sums of
    ``−log softmax(head_m(|e_a − e_b|))[code]``, weight 2 for each i < j pair (it stands for both orders) and 1 for
    each diagonal pair (input 0). ``E [M, K, d]``: the modalities' embeddings of the batch's unique items;
    ``ia``, ``ib`` ``[P]``: the rows of the two ends of the i < j pairs; ``t_off [M, P]`` their teacher codes;
    ``t_diag [M, n]`` the codes of the diagonal pairs.

    One autograd node with a hand-written backward (:class:`CodeHeadNLL`) instead of ~25 small ones: on CPU this
    head's cost was mostly passes over ``[M, P, d]`` temporaries, not FLOPs. :func:`code_head_nll_reference` is the
    same computation with autograd (the tests compare values and gradients)."""
    W1 = torch.stack([h[0].weight for h in heads])
    b1 = torch.stack([h[0].bias for h in heads])
    W2 = torch.stack([h[2].weight for h in heads])
    b2 = torch.stack([h[2].bias for h in heads])
    return CodeHeadNLL.apply(E, ia, ib, W1, b1, W2, b2, t_off, t_diag, float(w_off))
