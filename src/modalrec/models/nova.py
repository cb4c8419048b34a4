"""NOVA (Liu et al., AAAI 2021): non-invasive self-attention; side information shapes the attention, never the values.

No official code exists (paper-notes §5); this follows the paper's NOVA layer on a causal SASRec-style encoder, the
form DIF-SR and KDSR compare against:

- The hidden states ``R`` start from the **ID embeddings only** and stay pure item representations.
- The side information ``S = {position, modality_1, ...}`` of every position is fused with the current hidden states
  into ``F = fuse(R, S)`` at every layer: ``sum`` (``R + sum_s S_s``), or ``gate`` (the paper's best, gating: a softmax
  over the sources from a linear map of their concatenation, ``F = sum_k g_k F_k`` over ``F_k in {R, S_1, ...}``).
- The attention is **non-invasive**: ``Q = F W_Q``, ``K = F W_K``, but ``V = R W_V``, so
  ``NOVA(R, S) = softmax(Q K^T / sqrt(d_h)) V``; then RecBole's output projection, residual LayerNorm and GELU
  feed-forward (post-LN, as the other RecBole-style baselines here).
- Scores against the ID table; full-softmax cross-entropy at every position.

The modality features (standardised, linearly projected to ``dim``: the frozen path of
:class:`~modalrec.models.item_repr.ItemRepr`) are the side information in place of NOVA's categorical attributes.

Differences from the paper: causal (left-to-right, next-item) rather than NOVA-BERT's bidirectional cloze training,
as in the comparisons of DIF-SR and KDSR; positions counted from the newest item (left padding); a modality an item
lacks gives a zero side vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, recbole_init, register_model
from ._transformer import attention_mask
from .item_repr import IDScoredModel, ItemRepr

FUSIONS = ("sum", "gate")


class Fusion(nn.Module):
    """NOVA's fusion of the hidden states with the side information: ``sum`` or ``gate``."""

    def __init__(self, dim: int, n_sources: int, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "gate":
            self.gate = nn.Linear(n_sources * dim, n_sources)

    def forward(self, h: Tensor, side: list[Tensor]) -> Tensor:
        src = [h] + [s.expand_as(h) for s in side]
        if self.kind == "sum":
            return torch.stack(src, 0).sum(0)
        g = torch.softmax(self.gate(torch.cat(src, -1)), -1)  # [B, L, S]
        return (torch.stack(src, -1) * g.unsqueeze(-2)).sum(-1)


class NOVALayer(nn.Module):
    def __init__(self, dim: int, heads: int, n_side: int, fusion: str, inner: int, dropout: float,
                 attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.fuse = Fusion(dim, 1 + n_side, fusion)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-12), nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, side: list[Tensor], mask: Tensor) -> Tensor:
        B, L, D = x.shape
        f = self.fuse(x, side)
        y = F.scaled_dot_product_attention(self.split(self.query(f)), self.split(self.key(f)),
                                           self.split(self.value(x)), attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = self.ln1(x + self.drop(self.dense(y.transpose(1, 2).reshape(B, L, D))))
        return self.ln2(x + self.drop(self.ffn(x)))


@register_model("nova")
class NOVA(IDScoredModel):
    @dataclass
    class Config:
        dim: int = 64
        layers: int = 2
        heads: int = 2
        inner: int = 256
        dropout: float = 0.5
        attn_dropout: float = 0.5
        fusion: str = "gate"  # sum | gate (the paper's best)
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "NOVA.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'nova')}"
        if cfg.fusion not in FUSIONS:
            raise ParamError(f"{key}.fusion", f"must be one of {FUSIONS}, got {cfg.fusion!r}")
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        # side information: positions always, plus any modalities (an empty list = positions only)
        kind = "frozen" if cfg.modalities else "id"
        self.items = ItemRepr(ctx.n_items, d, kind, cfg.modalities, "sum", ctx.features, key=key)
        self.pos = nn.Embedding(self.max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            NOVALayer(d, cfg.heads, 1 + len(self.items.modalities), cfg.fusion, cfg.inner, cfg.dropout,
                      cfg.attn_dropout) for _ in range(cfg.layers))
        for m in [self.pos, self.layers]:
            m.apply(recbole_init)  # the ID table keeps ItemRepr's N(0, 0.02) (row 0 = 0), the projections theirs

    def encode(self, input_ids: Tensor) -> Tensor:
        ids = input_ids[:, -self.max_len:]
        L = ids.shape[1]
        pad = ids == 0
        mask = attention_mask(pad)
        pos = self.pos(torch.arange(self.max_len - L, self.max_len, device=ids.device)).unsqueeze(0)
        side = [pos] + [self.items.modality_embedding(m)[ids] for m in self.items.modalities]
        x = self.drop(self.ln(self.items.id_emb(ids)))
        for blk in self.layers:
            x = blk(x, side, mask)
        return x
