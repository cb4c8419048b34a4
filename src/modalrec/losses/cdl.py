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
diagonal i = j included as the released code does (``diagonal: false`` drops it). Never N×N: the pair tensors are
``[B, U, U]`` with U the largest number of unique items in the batch (≤ the batch's longest sequence), and the
code head runs only on the valid pairs. The teacher's correlations are symmetric, so only pairs i ≤ j are looked up
and pushed through the code head, with weight 2 for i < j: exactly the mean over ordered pairs at half the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError

HOLISTIC_LOSSES = ("frobenius", "soft_match")
XI = ("cos", "dot", "euclidean", "manhattan")
_XI_ALIASES = {"cosine": "cos", "euc": "euclidean", "man": "manhattan", "l2": "euclidean", "l1": "manhattan"}


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

    def validate(self, key: str = "models.<name>") -> None:
        if self.holistic_loss not in HOLISTIC_LOSSES:
            raise ParamError(f"{key}.holistic_loss", f"must be one of {HOLISTIC_LOSSES}, got {self.holistic_loss!r}")
        if not self.tau > 0:
            raise ParamError(f"{key}.tau", f"must be > 0, got {self.tau}")
        if self.proj_layers not in (1, 2):
            raise ParamError(f"{key}.proj_layers", f"must be 1 or 2, got {self.proj_layers}")
        if self.xi is not None:
            normalise_xi(self.xi, f"{key}.xi")
        for m in self.modalities:
            w = self.weights.get(m)
            if w is None or len(w) != 2:
                raise ParamError(f"{key}.weights.{m}", "needs [holistic_weight, code_weight] for every modality")
            if min(float(v) for v in w) < 0:
                raise ParamError(f"{key}.weights.{m}", f"weights must be >= 0, got {w}")
        extra = sorted(set(self.weights) - set(self.modalities))
        if extra:
            raise ParamError(f"{key}.weights.{extra[0]}", f"not one of the modalities {self.modalities}")


def normalise_xi(xi: str, key: str = "xi") -> str:
    xi = _XI_ALIASES.get(str(xi).lower(), str(xi).lower())
    if xi not in XI:
        raise ParamError(key, f"must be one of {XI}, got {xi!r}")
    return xi


def pairwise_xi(z: Tensor, xi: str) -> Tensor:
    """``[B, U, U]`` scores of every pair of rows of ``z [B, U, d]`` (same definitions as the teacher:
    cosine and dot products, raw Euclidean and Manhattan distances)."""
    if xi == "cos":
        z = F.normalize(z, dim=-1, eps=1e-8)
        return z @ z.transpose(1, 2)
    if xi == "dot":
        return z @ z.transpose(1, 2)
    return torch.cdist(z, z, p=2.0 if xi == "euclidean" else 1.0)


def unique_items(input_ids: Tensor) -> Tensor:
    """``[B, U]`` the unique non-padding items of each row, ascending (as ``np.unique`` in the released code), left
    padded with 0; U = the largest number of unique items in the batch (at least 1)."""
    s, _ = input_ids.sort(dim=1)
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s, _ = s.masked_fill(dup, 0).sort(dim=1)  # padding and duplicates (now 0) first
    U = max(int((s > 0).sum(1).max()), 1) if s.numel() else 1
    return s[:, s.shape[1] - U:]


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
    """Released code: ``mean_b sqrt(Σ_ij mask (r̂ − r)² / τ² + 1e-8)`` over sequences with at least one pair."""
    d = ((r_hat - r) / tau) * mask
    per_seq = torch.sqrt(d.pow(2).sum((1, 2)) + 1e-8)
    has = mask.flatten(1).any(1)
    return per_seq[has].mean() if has.any() else r_hat.sum() * 0


def soft_match_loss(r_hat: Tensor, r: Tensor, mask: Tensor, tau: float) -> Tensor:
    """Paper Eq. 3: row-wise temperature-τ softmax over the valid j of each row, squared error averaged over pairs."""
    neg = torch.finfo(r_hat.dtype).min

    def soft(x: Tensor) -> Tensor:
        return torch.softmax((x / tau).masked_fill(~mask, neg), dim=-1) * mask

    n = mask.sum()
    return ((soft(r_hat) - soft(r)).pow(2) * mask).sum() / n.clamp(min=1)


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

    def _teacher(self, device: torch.device) -> Any:
        t = self.teacher
        if hasattr(t, "to") and teacher_attr(t, "device", device) != device:
            moved = t.to(device)
            self.__dict__["teacher"] = t = moved if moved is not None else t
        return t

    def forward(self, input_ids: Tensor, tables: dict[str, nn.Embedding]) -> dict[str, Tensor]:
        items = unique_items(input_ids)
        mask = pair_mask(items, self.cfg.diagonal)
        b, i, j, w = upper_pairs(mask)
        ii, jj = items[b, i], items[b, j]
        teacher = self._teacher(items.device)
        out: dict[str, Tensor] = {}
        total = None
        for m in self.cfg.modalities:
            if m not in tables:
                raise ParamError("models.<name>.modalities", f"the backbone has no trainable {m!r} table")
            E = tables[m].weight
            hol_w, code_w = self.weights[m]
            if m in self.proj:
                z = self.proj[m](F.embedding(items, E)).float()
                r_hat = pairwise_xi(z, self.xi)
                r = torch.zeros_like(r_hat)
                t = teacher.holistic(ii, jj, m).to(r.dtype)
                r[b, i, j] = t
                r[b, j, i] = t
                fn = frobenius_loss if self.cfg.holistic_loss == "frobenius" else soft_match_loss
                part = fn(r_hat, r, mask, self.cfg.tau)
                out[f"cdl/{m}_holistic"] = part.detach()
                total = hol_w * part if total is None else total + hol_w * part
            if m in self.code_head:
                logits = self.code_head[m]((E[ii] - E[jj]).abs()).float()
                target = teacher.codes(ii, jj, m).long().to(logits.device)
                ce = F.cross_entropy(logits, target, reduction="none")
                part = (ce * w).sum() / w.sum().clamp(min=1)
                out[f"cdl/{m}_code"] = part.detach()
                total = code_w * part if total is None else total + code_w * part
        out["cdl"] = total if total is not None else input_ids.new_zeros((), dtype=torch.float32)
        return out


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
