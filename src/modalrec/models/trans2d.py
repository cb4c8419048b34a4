"""Trans2D (Singer et al., WSDM 2022): attention over a 2D sequence, positions x attributes, without pooling first.

Follows the authors' code, urielsinger/Trans2D (``models/modeling_bert2D.py``: ``BertSelfAttention`` with
``Linear2D``; ``models/SequenceModel.py``: the embeddings and the pooling after the Transformer):

- Every position holds C attribute vectors: here the ID embedding and each modality's vector (standardised and
  linearly projected to ``dim``, the frozen path of :class:`~modalrec.models.item_repr.ItemRepr`), a ``[B, L, C, d]``
  tensor; + position embedding (shared by the attributes) -> LayerNorm over ``[C, d]`` -> dropout.
- ``Linear2D``: one linear map per attribute (weights ``[C, d_in, d_out]``) for the queries, keys, values, the output
  and the feed-forward layers; heads are ``dim`` wide each (the code's ``attention_head_size = hidden_size``).
- **Attention2D**: the query ``(i, a)`` (position i, attribute a) scores the key ``(j, b)`` with
  ``alpha_0 Q_ia.K_jb + alpha_1 F_ab + alpha_2 T_ij``, where ``T_ij = sum_c Q_ic.K_jc`` (position-to-position through
  matching attributes) and ``F_ab = sum_p Q_pa.K_pb`` (attribute-to-attribute through the same positions), learned
  alphas (start 1); divided by ``sqrt(dim)``, the softmax runs jointly over all ``(j, b)``, and the output is
  ``sum_{j,b} p V_jb``. Post-LN residuals and GELU feed-forward (BERT layers, 2D).
- After the layers the attributes are pooled (``mean``, the code's default choice among mean / sum / concat) and the
  sequence vector is scored against the ID table; full-softmax cross-entropy at every position.

Differences from the code, which is a bidirectional encoder scoring a candidate with a binary head (watch-list
prediction): the attention is causal (keys ``j <= i``), and so is the attribute term, summed over the positions
``p <= i`` that are not padding (the code sums over the whole padded sequence); next-item prediction over the whole
catalogue against the ID table instead of a BCE head per candidate; dense modality vectors instead of categorical
attributes; positions counted from the newest item (left padding); a modality an item lacks gives a zero vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, register_model
from .item_repr import IDScoredModel, ItemRepr

POOLINGS = ("mean", "sum")


class Linear2D(nn.Module):
    """One linear map per attribute: ``[..., C, d_in] -> [..., C, d_out]``."""

    def __init__(self, n_attr: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_attr, d_in, d_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_attr, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...ci,cio->...co", x, self.weight) + self.bias


class Attention2D(nn.Module):
    def __init__(self, n_attr: int, dim: int, heads: int, attn_dropout: float):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.query = Linear2D(n_attr, dim, heads * dim)
        self.key = Linear2D(n_attr, dim, heads * dim)
        self.value = Linear2D(n_attr, dim, heads * dim)
        self.alpha = nn.Parameter(torch.ones(3))
        self.drop = nn.Dropout(attn_dropout)

    def split(self, x: Tensor) -> Tensor:
        """``[B, L, C, h*d] -> [B, h, L, C, d]``."""
        B, L, C, _ = x.shape
        return x.view(B, L, C, self.heads, self.dim).permute(0, 3, 1, 2, 4)

    def scores(self, q: Tensor, k: Tensor, keep: Tensor) -> Tensor:
        """``[B, h, L_i, C_a, C_b, L_j]`` before masking; ``keep [B, L]`` marks real positions."""
        full = torch.einsum("zhiad,zhjed->zhiaej", q, k)
        time = torch.einsum("zhicd,zhjcd->zhij", q, k)[:, :, :, None, None, :]
        per_pos = torch.einsum("zhpad,zhped->zhpae", q, k) * keep[:, None, :, None, None]
        feature = per_pos.cumsum(2)[..., None]  # causal: positions p <= i
        return self.alpha[0] * full + self.alpha[1] * feature + self.alpha[2] * time

    def forward(self, x: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        """``x [B, L, C, d]``; ``mask [B, L_i, L_j]`` allowed keys. Returns ``[B, L, C, h*d]``."""
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        s = self.scores(q, k, keep) / math.sqrt(self.dim)
        s = s.masked_fill(~mask[:, None, :, None, None, :], float("-inf"))
        B, h, L, C, _, _ = s.shape
        p = self.drop(torch.softmax(s.reshape(B, h, L, C, -1), -1).view(s.shape))  # jointly over (b, j)
        out = torch.einsum("zhiaej,zhjed->zhiad", p, v)
        return out.permute(0, 2, 3, 1, 4).reshape(B, L, C, h * self.dim)


class Layer2D(nn.Module):
    """A BERT layer on the 2D sequence: Attention2D, Linear2D output, LN over [C, d]; Linear2D GELU feed-forward."""

    def __init__(self, n_attr: int, dim: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn = Attention2D(n_attr, dim, heads, attn_dropout)
        self.dense = Linear2D(n_attr, heads * dim, dim)
        self.ln1 = nn.LayerNorm([n_attr, dim], eps=1e-12)
        self.ffn_in, self.ffn_out = Linear2D(n_attr, dim, inner), Linear2D(n_attr, inner, dim)
        self.ln2 = nn.LayerNorm([n_attr, dim], eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        x = self.ln1(x + self.drop(self.dense(self.attn(x, mask, keep))))
        return self.ln2(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


@register_model("trans2d")
class Trans2D(IDScoredModel):
    @dataclass
    class Config:
        dim: int = 64
        layers: int = 2
        heads: int = 1  # each head is `dim` wide (the code's attention_head_size = hidden_size)
        inner: int = 256
        dropout: float = 0.2
        attn_dropout: float = 0.2
        pooling: str = "mean"  # mean | sum over the attributes after the layers
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "Trans2D.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'trans2d')}"
        if cfg.pooling not in POOLINGS:
            raise ParamError(f"{key}.pooling", f"must be one of {POOLINGS}, got {cfg.pooling!r}")
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        kind = "frozen" if cfg.modalities else "id"
        self.items = ItemRepr(ctx.n_items, d, kind, cfg.modalities, "sum", ctx.features, key=key)
        C = 1 + len(self.items.modalities)
        self.pos = nn.Embedding(self.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.ln = nn.LayerNorm([C, d], eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer2D(C, d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout)
                                    for _ in range(cfg.layers))

    def encode(self, input_ids: Tensor) -> Tensor:
        """Pooled sequence states ``[B, L, d]``."""
        ids = input_ids[:, -self.max_len:]
        L = ids.shape[1]
        pad = ids == 0
        attrs = [self.items.id_emb(ids)] + [self.items.modality_embedding(m)[ids] for m in self.items.modalities]
        pos = self.pos(torch.arange(self.max_len - L, self.max_len, device=ids.device))
        x = self.drop(self.ln(torch.stack(attrs, 2) + pos[None, :, None, :]))
        causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=ids.device)
        mask = (causal & ~pad[:, None, :]) | eye  # [B, L, L]: each position sees itself (no empty rows)
        keep = (~pad).to(x.dtype)
        for blk in self.layers:
            x = blk(x, mask, keep)
        return x.mean(2) if self.cfg.pooling == "mean" else x.sum(2)
