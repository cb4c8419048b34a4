"""Correlation Distillation Learning (KDSR §3.2, Eq. 2-5): the student side of KDSR, for any backbone.

The teacher (:mod:`modalrec.teacher.teacher`) knows, for any pair of items, the holistic correlation
``r_ij = ξ(m̃_i, m̃_j)`` of their AE codes and the dissected correlation code ``c_ij`` (the nearest of x codewords of
the D per-part correlations). The student makes the *trainable* modality tables ``E`` (``model.modality_tables()``)
keep those correlations while the recommender fine-tunes them:

- holistic: ``r̂_ij = ξ(g_φ(e_i), g_φ(e_j))`` against ``r_ij``, g_φ one Linear (``proj_layers: 2`` keeps the released
  code's two stacked Linear layers). Two loss forms, because paper and code differ (paper-notes §4.1 K2):

  * ``frobenius`` (released code): per sequence ``sqrt(Σ_valid (r̂_ij − r_ij)² / τ² + 1e-8)``, averaged over the
    batch's sequences. τ is only a scale here.
  * ``soft_match`` (the paper's Eq. 3 read literally): a temperature-τ softmax over j of each row (within the
    sequence's valid pairs) for teacher and student, then the squared error averaged over valid pairs.
- dissected: ``p = W_out(ReLU(W_c |e_i − e_j|))`` (x logits) trained with cross-entropy against ``c_ij``, averaged
  over valid pairs; it reads the raw trainable embeddings (no g_φ), as in the code.

**Which pairs** (K5): all ordered pairs of the *unique* items of each training sequence (padding masked), with the
diagonal i = j included as the released code does (``diagonal: false`` drops it). Never N×N, nor even ``[B, U, U]``:
one sort of the batch gives every sequence's unique items as one flat list (:func:`sequence_pairs`), and the losses
work on the list of pairs i ≤ j of the same sequence, O(Σ_b U_b²) with U_b ≤ the batch's longest sequence. The
teacher's correlations are symmetric, so only pairs i ≤ j are looked up and pushed through the code head, with
weight 2 for i < j: exactly the mean over ordered pairs at half the cost. A diagonal pair's code-head input
``|e_i − e_i|`` is 0, so its logits are computed once; ``soft_match`` mirrors the i < j pairs to normalise each row.
The dense ``[B, U, U]`` forms (:func:`pair_mask`, :func:`frobenius_loss`, :func:`soft_match_loss`) stay as the
readable reference the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from ..teacher.correlation import XI, normalise_xi

HOLISTIC_LOSSES = ("frobenius", "soft_match")


@dataclass
class CDLConfig:
    modalities: list[str] = field(default_factory=lambda: ["image", "text"])
    # modality -> [λ_S (holistic), λ_C (code)]: paper Amazon (1, 0.5); ML-1M (0.5, 0.1); code parity img (4,4) txt (0.5,0.5)
    weights: dict[str, list[float]] = field(default_factory=lambda: {"image": [1.0, 0.5], "text": [1.0, 0.5]})
    tau: float = 1.5
    holistic_loss: str = "soft_match"  # soft_match (paper Eq. 3) | frobenius (released code)
    diagonal: bool = True  # include pairs (i, i) as the released code does
    proj_layers: int = 1  # g_φ: 1 Linear (paper) | 2 stacked Linear layers (released code)
    xi: str | None = None  # student's scoring function; None = the teacher's
    teacher_cache: int = 4_000_000  # item pairs per modality whose teacher answers are kept across batches; 0 = off

    def validate(self, key: str = "models.<name>") -> None:
        if self.holistic_loss not in HOLISTIC_LOSSES:
            raise ParamError(f"{key}.holistic_loss", f"must be one of {HOLISTIC_LOSSES}, got {self.holistic_loss!r}")
        if not self.tau > 0:
            raise ParamError(f"{key}.tau", f"must be > 0, got {self.tau}")
        if self.proj_layers not in (1, 2):
            raise ParamError(f"{key}.proj_layers", f"must be 1 or 2, got {self.proj_layers}")
        if self.xi is not None:
            normalise_xi(self.xi, f"{key}.xi")
        if not isinstance(self.teacher_cache, int) or isinstance(self.teacher_cache, bool) or self.teacher_cache < 0:
            raise ParamError(f"{key}.teacher_cache", f"must be an integer >= 0, got {self.teacher_cache!r}")
        for m in self.modalities:
            w = self.weights.get(m)
            if w is None or len(w) != 2:
                raise ParamError(f"{key}.weights.{m}", "needs [holistic_weight, code_weight] for every modality")
            if min(float(v) for v in w) < 0:
                raise ParamError(f"{key}.weights.{m}", f"weights must be >= 0, got {w}")
        extra = sorted(set(self.weights) - set(self.modalities))
        if extra:
            raise ParamError(f"{key}.weights.{extra[0]}", f"not one of the modalities {self.modalities}")


def pairwise_xi(z: Tensor, xi: str) -> Tensor:
    """``[B, U, U]`` scores of every pair of rows of ``z [B, U, d]`` (same definitions as the teacher:
    cosine and dot products, raw Euclidean and Manhattan distances)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
        return z @ z.transpose(1, 2)
    if xi == "dot":
        return z @ z.transpose(1, 2)
    return torch.cdist(z, z, p=2.0 if xi == "euclidean" else 1.0)


def pair_xi(z: Tensor, i: Tensor, j: Tensor, xi: str) -> Tensor:
    """``[P]`` scores ξ(z_i, z_j) of the listed row pairs of ``z [K, d]`` (the definitions of :func:`pairwise_xi`;
    a distance of a row to itself is exactly 0, with gradient 0)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
    zi, zj = z.index_select(0, i), z.index_select(0, j)  # (index_select: a much faster backward than z[i] on CPU)
    if xi in ("cos", "dot"):
        return (zi * zj).sum(-1)
    d = zi - zj
    return torch.linalg.vector_norm(d, ord=2 if xi == "euclidean" else 1, dim=-1)


def _sorted_unique(input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """One sort per batch: ``(s, keep)`` with ``s`` each row ascending and ``keep`` True at the first occurrence of
    every non-padding item of the row."""
    s, _ = input_ids.sort(dim=1)
    keep = s > 0
    keep[:, 1:] &= s[:, 1:] != s[:, :-1]
    return s, keep


def unique_items(input_ids: Tensor) -> Tensor:
    """``[B, U]`` the unique non-padding items of each row, ascending (as ``np.unique`` in the released code), left
    padded with 0; U = the largest number of unique items in the batch (at least 1)."""
    s, keep = _sorted_unique(input_ids)
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
    """The supervised pairs of a batch as flat lists (O(#pairs) memory; no ``[B, U, U]`` tensors).

    ``items [K]``: every sequence's unique items, ascending within a sequence, sequences in batch order;
    ``seq [K]``: the sequence (batch row) of each; ``i``, ``j`` ``[P]``: positions in ``items`` of the pairs with
    i ≤ j (i < j without the diagonal) of the same sequence, ordered by (sequence, i, j) like ``upper_pairs``."""

    items: Tensor
    seq: Tensor
    i: Tensor
    j: Tensor
    n_seq: int

    @property
    def offdiag(self) -> Tensor:
        return self.i != self.j


def sequence_pairs(input_ids: Tensor, diagonal: bool = True) -> SequencePairs:
    """The pairs the losses supervise, from one sort of ``input_ids [B, L]`` (see :class:`SequencePairs`)."""
    s, keep = _sorted_unique(input_ids)
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
    return SequencePairs(items, seq, i, j, B)


def pair_mask(items: Tensor, diagonal: bool = True) -> Tensor:
    """``[B, U, U]`` True for the ordered pairs the losses supervise (both items real; i = j iff ``diagonal``)."""
    valid = items > 0
    mask = valid[:, :, None] & valid[:, None, :]
    if not diagonal:
        mask &= ~torch.eye(items.shape[1], dtype=torch.bool, device=items.device)
    return mask


def upper_pairs(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Indices ``(b, i, j)`` of the valid pairs with i ≤ j and their weight (2 for i < j, 1 on the diagonal)."""
    tri = torch.ones(mask.shape[1], mask.shape[2], dtype=torch.bool, device=mask.device).triu()
    b, i, j = (mask & tri).nonzero(as_tuple=True)
    w = torch.where(i == j, 1.0, 2.0).to(torch.float32)
    return b, i, j, w


def frobenius_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Released code: ``mean_b sqrt(Σ_ij mask (r̂ − r)² / τ² + 1e-8)`` over sequences with at least one pair
    (dense ``[B, U, U]`` form; :class:`CDL` uses :func:`frobenius_pairs`, the same value on pair lists)."""
    d = ((r_hat - r) / tau) * mask
    per_seq = torch.sqrt(d.pow(2).sum((1, 2)) + 1e-8)
    has = mask.flatten(1).any(1)
    return per_seq[has].mean() if has.any() else r_hat.sum() * 0


def soft_match_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Paper Eq. 3: row-wise temperature-τ softmax over the valid j of each row, squared error averaged over pairs
    (dense ``[B, U, U]`` form; :class:`CDL` uses :func:`soft_match_pairs`)."""
    neg = torch.finfo(r_hat.dtype).min

    def soft(x: Tensor) -> Tensor:
        return torch.softmax((x / tau).masked_fill(~mask, neg), dim=-1) * mask

    n = mask.sum()
    return ((soft(r_hat) - soft(r)).pow(2) * mask).sum() / n.clamp(min=1)


def frobenius_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`frobenius_loss` on the i ≤ j pair lists: each i < j pair stands for both orders (weight 2)."""
    sq = ((r_hat - r) / tau).pow(2)
    sq = torch.where(pairs.offdiag, 2 * sq, sq)
    seq = pairs.seq[pairs.i]
    per_seq = sq.new_zeros(pairs.n_seq).index_add(0, seq, sq)
    has = torch.zeros(pairs.n_seq, dtype=torch.bool, device=sq.device)
    has[seq] = True
    if not bool(has.any()):
        return r_hat.sum() * 0
    return torch.sqrt(per_seq[has] + 1e-8).mean()


def _segment_softmax(x: Tensor, row: Tensor, n_rows: int) -> Tensor:
    with torch.no_grad():
        mx = x.new_full((n_rows,), float("-inf")).scatter_reduce(0, row, x, "amax", include_self=True)
    e = torch.exp(x - mx[row])
    return e / e.new_zeros(n_rows).index_add(0, row, e)[row]


def soft_match_pairs(r_hat: Tensor, r: Tensor, pairs: SequencePairs, tau: float) -> Tensor:
    """:func:`soft_match_loss` on the pair lists: the i < j pairs are mirrored to get every ordered pair, then a
    softmax over each row (b, i) and the squared error averaged over the ordered pairs."""
    off = pairs.offdiag
    row = torch.cat([pairs.i, pairs.j[off]])
    n_rows = pairs.items.shape[0]
    ps = _segment_softmax(torch.cat([r_hat, r_hat[off]]) / tau, row, n_rows)
    pt = _segment_softmax(torch.cat([r, r[off]]) / tau, row, n_rows)
    return (ps - pt).pow(2).sum() / max(row.shape[0], 1)


class CDL(nn.Module):
    """The student heads and losses for every supervised modality. ``forward(input_ids, tables)`` returns a dict
    ``{"cdl": weighted total, "cdl/<modality>_holistic": ..., "cdl/<modality>_code": ...}`` (unweighted parts)."""

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
        self.caches = {m: PairCache(cfg.teacher_cache) for m in cfg.modalities}

    def _teacher(self, device: torch.device) -> Any:
        t = self.teacher
        if hasattr(t, "to") and teacher_attr(t, "device", device) != device:
            moved = t.to(device)
            self.__dict__["teacher"] = t = moved if moved is not None else t
        return t

    def forward(self, input_ids: Tensor, tables: dict[str, nn.Embedding]) -> dict[str, Tensor]:
        pairs = sequence_pairs(input_ids, self.cfg.diagonal)
        items, pi, pj, off = pairs.items, pairs.i, pairs.j, pairs.offdiag
        ii, jj = items[pi], items[pj]
        n_off = int(off.sum())
        n_diag = pi.shape[0] - n_off
        teacher = self._teacher(items.device)
        out: dict[str, Tensor] = {}
        total = None
        for m in self.cfg.modalities:
            if m not in tables:
                raise ParamError("models.<name>.modalities", f"the backbone has no trainable {m!r} table")
            if m not in self.proj and m not in self.code_head:
                continue
            Ek = table_rows(tables[m].weight, items)  # [K, d]: each unique item of a sequence once
            hol_w, code_w = self.weights[m]
            need = (m in self.proj, m in self.code_head)
            r, target = self.caches[m].get(ii, jj, lambda a, b: teacher_lookup(teacher, a, b, m, *need), need)
            if m in self.proj:
                r_hat = pair_xi(self.proj[m](Ek).float(), pi, pj, self.xi)
                r = r.to(device=r_hat.device, dtype=r_hat.dtype)
                if self.cfg.holistic_loss == "frobenius":
                    part = frobenius_pairs(r_hat, r, pairs, self.cfg.tau)
                else:
                    part = soft_match_pairs(r_hat, r, pairs, self.cfg.tau)
                out[f"cdl/{m}_holistic"] = part.detach()
                total = hol_w * part if total is None else total + hol_w * part
            if m in self.code_head:
                head = self.code_head[m]
                target = target.to(device=Ek.device, dtype=torch.long)
                # i < j pairs stand for both orders (weight 2); a diagonal pair's input |e_i - e_i| is 0, so its
                # logits are the head's output at 0, computed once.
                po, qo = pi[off], pj[off]
                logits = head((Ek.index_select(0, po) - Ek.index_select(0, qo)).abs()).float()
                ce = 2 * F.cross_entropy(logits, target[off], reduction="sum")
                if n_diag:
                    log_p0 = F.log_softmax(head(Ek.new_zeros((1, Ek.shape[1]))).float(), dim=-1)[0]
                    ce = ce - log_p0[target[~off]].sum()
                part = ce / max(2 * n_off + n_diag, 1)
                out[f"cdl/{m}_code"] = part.detach()
                total = code_w * part if total is None else total + code_w * part
        out["cdl"] = total if total is not None else input_ids.new_zeros((), dtype=torch.float32)
        return out


class PairCache:
    """The teacher's answers for item pairs, kept across batches: the teacher is fixed and the same training windows
    (so the same pairs) come back every epoch, so from the second epoch on CDL costs no teacher lookups. Exactly
    the teacher's values (it is deterministic per pair). Sorted int64 keys ``i << 32 | j`` searched with
    ``searchsorted``; new pairs are merged (linear time) into a small sorted segment, itself merged into the main
    one when it grows past 1/8 of it. At most ``max_pairs`` pairs are kept (0 = no cache); later pairs are
    simply looked up every time. Memory: 16 bytes a pair."""

    def __init__(self, max_pairs: int):
        self.max_pairs = int(max_pairs)
        self.segments: list[tuple[Tensor, Tensor | None, Tensor | None]] = []  # (keys, holistic, codes int32)
        self.need: tuple[bool, bool] | None = None

    def __len__(self) -> int:
        return sum(len(k) for k, _, _ in self.segments)

    def get(self, i: Tensor, j: Tensor, fetch: Any, need: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
        """``(holistic, codes)`` of the pairs (``i <= j`` item ids), from the cache or ``fetch(i', j')``."""
        if self.max_pairs <= 0:
            return fetch(i, j)
        if self.need != need or (self.segments and self.segments[0][0].device != i.device):
            self.segments, self.need = [], need  # what is cached, or where, changed: start again
        keys = (i << 32) | j
        hol = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device) if need[0] else None
        codes = torch.zeros(keys.shape, dtype=torch.long, device=keys.device) if need[1] else None
        found = torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
        for k, h, c in self.segments:
            pos = torch.searchsorted(k, keys).clamp(max=len(k) - 1)
            hit = (k[pos] == keys) & ~found
            if hol is not None:
                hol = torch.where(hit, h[pos], hol)
            if codes is not None:
                codes = torch.where(hit, c[pos].long(), codes)
            found |= hit
        miss = (~found).nonzero(as_tuple=True)[0]
        if len(miss):
            new, inv = torch.unique(keys[miss], return_inverse=True)  # sorted, each pair once
            h_new, c_new = fetch(new >> 32, new & 0xFFFFFFFF)
            if hol is not None:
                h_new = h_new.to(device=keys.device, dtype=torch.float32)
                hol[miss] = h_new[inv]
            if codes is not None:
                c_new = c_new.to(device=keys.device, dtype=torch.long)
                codes[miss] = c_new[inv]
            room = self.max_pairs - len(self)
            if room >= len(new):
                self._insert(new, h_new if hol is not None else None, c_new if codes is not None else None)
        return hol, codes

    def _insert(self, k: Tensor, h: Tensor | None, c: Tensor | None) -> None:
        c = c.to(torch.int32) if c is not None else None
        if len(self.segments) < 2:
            self.segments.append((k, h, c))
        else:
            (k1, h1, c1) = self.segments[1]
            self.segments[1] = _merge(k1, h1, c1, k, h, c)
        if len(self.segments) == 2 and 8 * len(self.segments[1][0]) > len(self.segments[0][0]):
            self.segments = [_merge(*self.segments[0], *self.segments[1])]


def _merge(k1: Tensor, h1: Tensor | None, c1: Tensor | None, k2: Tensor, h2: Tensor | None,
           c2: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Merge two sorted key segments (and their values) in linear time, without sorting again."""
    at2 = torch.searchsorted(k1, k2) + torch.arange(len(k2), device=k2.device)  # final slots of the k2 entries
    at1 = torch.ones(len(k1) + len(k2), dtype=torch.bool, device=k1.device)
    at1[at2] = False

    def place(a: Tensor | None, b: Tensor | None) -> Tensor | None:
        if a is None:
            return None
        out = a.new_empty(len(a) + len(b))
        out[at1] = a
        out[at2] = b
        return out

    return place(k1, k2), place(h1, h2), place(c1, c2)


def table_rows(weight: Tensor, ids: Tensor) -> Tensor:
    """``weight[ids]`` with a *sparse* gradient for the table: CDL touches a few hundred rows of an ``[N+1, d]``
    table, and a dense gradient would cost a zero-fill and an extra add of the whole table every step (the
    backbone's own dense gradient absorbs the sparse one). Should CDL be the table's only user in a backward pass,
    a hook turns the sparse gradient dense before the optimiser sees it."""
    if weight.requires_grad and not getattr(weight, "_cdl_densify", False):
        weight.register_post_accumulate_grad_hook(_densify_grad)
        weight._cdl_densify = True
    return F.embedding(ids, weight, sparse=True)


def _densify_grad(p: Tensor) -> None:
    if p.grad is not None and p.grad.is_sparse:
        p.grad = p.grad.to_dense()


def teacher_lookup(teacher: Any, i: Tensor, j: Tensor, modality: str, holistic: bool,
                   codes: bool) -> tuple[Tensor | None, Tensor | None]:
    """The teacher's holistic correlations and/or codes of the pairs; one fused ``lookup`` (a single gather of both
    items' m̃) when both are needed and the teacher has it."""
    if holistic and codes and callable(getattr(teacher, "lookup", None)):
        return teacher.lookup(i, j, modality)
    return (teacher.holistic(i, j, modality) if holistic else None, teacher.codes(i, j, modality) if codes else None)


def teacher_attr(teacher: Any, name: str, default: Any) -> Any:
    return getattr(teacher, name, default)


def teacher_n_codes(teacher: Any, modality: str) -> int:
    """The number of codewords x the teacher assigns for ``modality``."""
    for name in ("n_codes", "codes_per_modality", "x"):
        v = getattr(teacher, name, None)
        if callable(v):
            v = v(modality)
        if isinstance(v, dict):
            v = v.get(modality)
        if v is not None:
            return int(v)
    raise ParamError("kdsr.codes", "the teacher does not say how many codewords it has")
