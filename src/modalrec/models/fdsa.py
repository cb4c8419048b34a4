"""FDSA (Zhang et al., IJCAI 2019): feature-level deeper self-attention beside an item-level one.

Follows RecBole's ``fdsa.py`` with the modality features in place of its categorical item fields (as the PLM-feature
version of FDSA in RUCAIBox/UniSRec's ``baselines/fdsa.py``, and ODMT's image + text FDSA):

1. **Item stream**: ID embedding + position embedding -> LayerNorm -> dropout -> causal Transformer.
2. **Feature stream**: every modality's cached feature, standardised and linearly projected to ``dim`` (the frozen
   path of :class:`~modalrec.models.item_repr.ItemRepr`), is one "feature" of the item; a *vanilla attention*
   ``w = softmax_m(W_2 ReLU(W_1 f_m + b_1) + b_2)`` fuses an item's features into ``sum_m w_m f_m`` (RecBole's
   ``VanillaAttention``), then + position embedding -> LayerNorm -> dropout -> a second causal Transformer.
3. The two streams' outputs are concatenated, mapped back to ``dim`` (Linear -> LayerNorm -> dropout) and scored
   against the ID embeddings. RecBole's one ``LayerNorm`` is shared by the three places, as there.

The Transformer layers are RecBole's (post-LN attention and feed-forward, GELU, ``inner`` units, LayerNorm eps 1e-12,
weights ~ N(0, 0.02)). Training: all-position full-softmax cross-entropy (= RecBole's CE on every prefix).

Differences from RecBole: positions are counted from the newest item (histories are left-padded, as in
:mod:`~modalrec.models.sasrec`), so cropping a batch never changes a result; a modality an item lacks is left out
of its feature attention (an item with none gets a zero feature vector) instead of entering as a zero feature;
the features are dense vectors (modalities), not categorical fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, recbole_init, register_model
from .item_repr import IDScoredModel, ItemRepr
from ._transformer import TransformerLayer, attention_mask


class FeatureAttention(nn.Module):
    """RecBole's VanillaAttention over an item's features ``[..., M, d]`` -> ``[..., d]``; ``present [..., M]``
    marks the features the item has (absent ones get no weight; an item with none gets 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, feats: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        energy = self.projection(feats).squeeze(-1).masked_fill(~present, float("-inf"))
        w = torch.softmax(energy, -1).nan_to_num(0.0)  # all absent: a row of NaN -> 0
        return (feats * w.unsqueeze(-1)).sum(-2), w


@register_model("fdsa")
class FDSA(IDScoredModel):
    @dataclass
    class Config:
        dim: int = 64  # RecBole: hidden_size 64, inner_size 256, 2 layers, 2 heads, dropout 0.5 / 0.5
        layers: int = 2
        heads: int = 2
        inner: int = 256
        dropout: float = 0.5
        attn_dropout: float = 0.5
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "FDSA.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'fdsa')}"
        if not cfg.modalities:
            raise ParamError(f"{key}.modalities", "FDSA needs at least one modality")
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        self.items = ItemRepr(ctx.n_items, d, "frozen", cfg.modalities, "sum", ctx.features, key=key)
        self.pos = nn.Embedding(self.max_len, d)
        self.feature_att = FeatureAttention(d)
        self.item_layers = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout)
                                         for _ in range(cfg.layers))
        self.feature_layers = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout)
                                            for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.concat = nn.Linear(2 * d, d)
        for m in [self.pos, self.feature_att, self.item_layers, self.feature_layers, self.concat]:
            m.apply(recbole_init)  # the ID table keeps ItemRepr's N(0, 0.02) (row 0 = 0), the projections theirs

    def feature_table(self) -> tuple[Tensor, Tensor]:
        """Every item's modality vectors ``[N+1, M, d]`` and which it has ``[N+1, M]``."""
        feats = torch.stack([self.items.modality_embedding(m) for m in self.items.modalities], 1)
        present = torch.cat([getattr(self.items, f"has_{m}") for m in self.items.modalities], 1) > 0
        return feats, present

    def encode(self, input_ids: Tensor) -> Tensor:
        """Sequence states ``[B, L, d]`` of left-padded histories."""
        ids = input_ids[:, -self.max_len:]
        L = ids.shape[1]
        pad = ids == 0
        mask = attention_mask(pad)
        pos = self.pos(torch.arange(self.max_len - L, self.max_len, device=ids.device))
        x = self.drop(self.ln(self.items.id_emb(ids) + pos))
        feats, present = self.feature_table()
        f, _ = self.feature_att(feats[ids], present[ids])
        y = self.drop(self.ln(f + pos))
        for blk in self.item_layers:
            x = blk(x, mask)
        for blk in self.feature_layers:
            y = blk(y, mask)
        return self.drop(self.ln(self.concat(torch.cat([x, y], -1))))
