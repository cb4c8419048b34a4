"""DIF-SR (Xie et al., SIGIR 2022): decoupled side-information fusion inside the attention, not at the input.

Follows the authors' code, AIM-SE/DIF-SR (``recbole/model/sequential_recommender/sasrecd.py`` and
``DIFMultiHeadAttention`` in ``recbole/model/layers.py``):

- The sequence input is the **ID embedding only** (-> LayerNorm -> dropout); positions and side information never
  enter the hidden states.
- Every layer computes **separate attention maps** from separate projections: ``A_id = Q_id K_id^T`` from the hidden
  states, ``A_pos = Q_p K_p^T`` from the position embeddings, and one ``A_m = Q_m K_m^T`` per side-information source
  from its own embeddings (their own ``W_Q``, ``W_K`` per layer, heads of ``dim / heads``). The maps are fused
  (``sum``: ``A_id + A_pos + sum_m A_m``; ``gate``: the authors' *VanillaAttention* over the sources, a softmax over
  the maps from an MLP of each query's score row), scaled by ``1/sqrt(head size)``, masked (causal) and
  softmax-normalised; the **values come from the hidden states only**: ``softmax(A) V_id``.
- Then RecBole's output projection, dropout, residual LayerNorm and GELU feed-forward; scores against the ID table;
  full-softmax cross-entropy.

Side information here is the modality features (each modality one source), standardised and linearly projected to
``dim`` (the frozen path of :class:`~modalrec.models.item_repr.ItemRepr`) in place of DIF-SR's categorical
``categories`` field.

Differences from the authors' code: the side embeddings have the width of the ID embeddings (``dim``; DIF-SR's Beauty
config: 256 and 64); the auxiliary attribute-prediction loss (AAP, BCE over categories) becomes, for dense features,
an optional regression of the target item's standardised modality vectors from the sequence state (``aap_weight``,
off by default: its weight must be chosen on validation); positions are counted from the newest item (left
padding, as :mod:`~modalrec.models.sasrec`), and in ``gate`` fusion the score rows are laid out over ``max_len`` keys
with padding keys set to 0 before the gate (the code's rows are right-padded to ``max_len``), so cropping or
padding a batch never changes a result; a modality an item lacks gives a zero side vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import Batch, ModelContext, catalogue_ce, recbole_init, register_model
from ._transformer import attention_mask
from .item_repr import IDScoredModel, ItemRepr

FUSIONS = ("sum", "gate")


class ScoreGate(nn.Module):
    """The code's ``VanillaAttention(max_len, max_len)`` over attention maps ``[..., S, max_len]`` ->
    ``[..., max_len]``: a softmax over the S sources of ``MLP(score row)``."""

    def __init__(self, width: int):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        w = torch.softmax(self.projection(maps).squeeze(-1), -1)  # [..., S]
        return (maps * w.unsqueeze(-1)).sum(-2), w


class DIFAttention(nn.Module):
    """Decoupled multi-head attention: item, position and per-source maps, fused; values from the item states."""

    def __init__(self, dim: int, heads: int, n_side: int, max_len: int, fusion: str, dropout: float,
                 attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.fusion, self.max_len = heads, fusion, max_len
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.query_p, self.key_p = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.query_s = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_side))
        self.key_s = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_side))
        if fusion == "gate":
            self.gate = ScoreGate(max_len)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.dense = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` (or ``[L, D]``) -> ``[B or 1, heads, L, D/heads]``."""
        if x.dim() == 2:
            x = x.unsqueeze(0)
        B, L, D = x.shape
        return x.view(B, L, self.heads, D // self.heads).transpose(1, 2)

    def score_maps(self, x: Tensor, side: list[Tensor], pos: Tensor) -> Tensor:
        """The unscaled maps ``[B, heads, S, L, L]``, sources ordered (side..., item, position) as in the code."""
        maps = [self.split(q(s)) @ self.split(k(s)).transpose(-1, -2)
                for q, k, s in zip(self.query_s, self.key_s, side)]
        maps.append(self.split(self.query(x)) @ self.split(self.key(x)).transpose(-1, -2))
        maps.append((self.split(self.query_p(pos)) @ self.split(self.key_p(pos)).transpose(-1, -2))
                    .expand(x.shape[0], -1, -1, -1))
        return torch.stack(maps, 2)

    def fuse(self, maps: Tensor, pad: Tensor) -> Tensor:
        if self.fusion == "sum":
            return maps.sum(2)
        L = maps.shape[-1]  # gate: rows over max_len keys (left-padded like the histories), padding keys = 0
        rows = F.pad(maps.masked_fill(pad[:, None, None, None, :], 0.0), (self.max_len - L, 0))
        fused, _ = self.gate(rows.transpose(2, 3))  # [B, h, L, S, max_len] -> [B, h, L, max_len]
        return fused[..., self.max_len - L:]

    def forward(self, x: Tensor, side: list[Tensor], pos: Tensor, mask: Tensor, pad: Tensor) -> Tensor:
        B, L, D = x.shape
        scores = self.fuse(self.score_maps(x, side, pos), pad) / math.sqrt(D // self.heads)
        probs = self.attn_drop(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1))
        y = (probs @ self.split(self.value(x))).transpose(1, 2).reshape(B, L, D)
        return self.ln(x + self.drop(self.dense(y)))


class DIFLayer(nn.Module):
    def __init__(self, dim: int, heads: int, n_side: int, max_len: int, fusion: str, inner: int, dropout: float,
                 attn_dropout: float):
        super().__init__()
        self.attn = DIFAttention(dim, heads, n_side, max_len, fusion, dropout, attn_dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim), nn.Dropout(dropout))
        self.ln = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, side: list[Tensor], pos: Tensor, mask: Tensor, pad: Tensor) -> Tensor:
        x = self.attn(x, side, pos, mask, pad)
        return self.ln(x + self.ffn(x))


@register_model("difsr")
class DIFSR(IDScoredModel):
    @dataclass
    class Config:
        dim: int = 64  # DIF-SR Beauty: hidden 256, attribute 64, 4 layers, 8 heads, inner 256, dropout .5 / .3
        layers: int = 2
        heads: int = 2
        inner: int = 256
        dropout: float = 0.5
        attn_dropout: float = 0.3
        fusion: str = "gate"  # sum | gate (the authors' Beauty config: gate)
        aap_weight: float = 0.0  # auxiliary attribute prediction (regression of the target's modality vectors)
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "DIFSR.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'difsr')}"
        if cfg.fusion not in FUSIONS:
            raise ParamError(f"{key}.fusion", f"must be one of {FUSIONS}, got {cfg.fusion!r}")
        if not cfg.modalities:
            raise ParamError(f"{key}.modalities", "DIF-SR needs at least one side-information modality")
        if cfg.aap_weight < 0:
            raise ParamError(f"{key}.aap_weight", f"must be >= 0, got {cfg.aap_weight}")
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        self.items = ItemRepr(ctx.n_items, d, "frozen", cfg.modalities, "sum", ctx.features, key=key)
        self.pos = nn.Embedding(self.max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            DIFLayer(d, cfg.heads, len(cfg.modalities), self.max_len, cfg.fusion, cfg.inner, cfg.dropout,
                     cfg.attn_dropout) for _ in range(cfg.layers))
        self.aap = nn.ModuleDict({m: nn.Linear(d, self.items.modality_vectors(m).shape[1]) for m in cfg.modalities}
                                 if cfg.aap_weight > 0 else {})
        for m in [self.pos, self.layers, self.aap]:
            m.apply(recbole_init)  # the ID table keeps ItemRepr's N(0, 0.02) (row 0 = 0), the projections theirs

    def side_tables(self) -> list[Tensor]:
        return [self.items.modality_embedding(m) for m in self.items.modalities]

    def encode(self, input_ids: Tensor) -> Tensor:
        ids = input_ids[:, -self.max_len:]
        L = ids.shape[1]
        pad = ids == 0
        mask = attention_mask(pad)
        pos = self.pos(torch.arange(self.max_len - L, self.max_len, device=ids.device))
        side = [t[ids] for t in self.side_tables()]
        x = self.drop(self.ln(self.items.id_emb(ids)))
        for blk in self.layers:
            x = blk(x, side, pos, mask, pad)
        return x

    def standardised(self, m: str) -> Tensor:
        """The regression target of AAP: the standardised modality vectors ``[N+1, d_m]`` (0 where missing)."""
        it = self.items
        return (it.modality_vectors(m) - getattr(it, f"mu_{m}")) / getattr(it, f"sd_{m}") * getattr(it, f"has_{m}")

    def loss(self, batch: Batch) -> Tensor | dict[str, Tensor]:
        h, tgt = self.targeted_states(batch)
        rec = catalogue_ce(h, self.items.id_emb.weight, tgt)
        if not self.aap:
            return rec
        out = {"rec": rec}
        for m, head in self.aap.items():
            has = getattr(self.items, f"has_{m}")[tgt, 0] > 0
            err = (head(h) - self.standardised(m)[tgt]).pow(2).sum(-1)
            out[f"aap_{m}"] = (err * has).sum() / has.sum().clamp(min=1)
        out["loss"] = rec + self.cfg.aap_weight * sum(out[f"aap_{m}"] for m in self.aap)
        return out
