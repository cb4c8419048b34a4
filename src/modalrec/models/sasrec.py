"""SASRec (Kang & McAuley 2018): a causal Transformer over the item history.

Follows pmixer/SASRec.pytorch (embeddings scaled by sqrt(d), learned absolute positions aligned to the *end* of the
sequence, pre-LayerNorm blocks, a final LayerNorm) but trains like the papers we reproduce: every position with
full-softmax cross-entropy over the catalogue, not BCE with one sampled negative.

:class:`SASRecEncoder` is the reusable part (positions + blocks on already-embedded inputs); ODMT's three user
encoders and any other sequence model can use it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ModelContext, register_model
from .item_repr import ItemRepr, ReprSeqModel


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """``last_only``: queries of the last position only (output ``[B, 1, D]``), for scoring."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, mask, L = q[:, :, -1:], mask[:, :, -1:], 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """One Transformer block; ``norm_first`` = pre-LN (SASRec.pytorch) or post-LN (RecBole, ODMT)."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int = 1, act: str = "gelu",
                 norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU() if act == "gelu" else nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """``last_only``: compute only the last position's output ``[B, 1, D]`` (keys still see every position)."""
        res = x[:, -1:] if last_only else x
        if self.norm_first:
            x = res + self.drop(self.attn(self.ln1(x), mask, last_only))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(res + self.drop(self.attn(x, mask, last_only)))
        return self.ln2(x + self.drop(self.ffn(x)))


class SASRecEncoder(nn.Module):
    """Positions + causal Transformer blocks on embedded, left-padded inputs ``[B, L, d]`` -> ``[B, L, d]``.

    Positions are counted from the end (the newest item always has the same position embedding), so cropping a
    batch to its longest sequence gives exactly the result of padding to ``max_len``.
    """

    def __init__(self, dim: int, max_len: int, layers: int = 2, heads: int = 1, dropout: float = 0.2,
                 ffn_mult: int = 1, act: str = "gelu", norm_first: bool = True):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, ffn_mult, act, norm_first) for _ in range(layers))
        self.ln = nn.LayerNorm(dim) if norm_first else nn.Identity()

    @staticmethod
    def attention_mask(pad: Tensor) -> Tensor:
        """Boolean ``[B, 1, L, L]``: causal, no attention to padding keys, except each position to itself
        (so padding rows are never fully masked, which would give NaN)."""
        L = pad.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=pad.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=pad.device)
        return ((causal & ~pad[:, None, :]) | eye)[:, None]

    def forward(self, x: Tensor, pad: Tensor, last_only: bool = False) -> Tensor:
        """``x`` [B, L, d] embedded inputs; ``pad`` [B, L] True at padding positions. ``last_only`` returns only
        the last position ``[B, 1, d]`` (scoring: the last block runs one query per sequence)."""
        L = x.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence of length {L} is longer than max_len={self.max_len}")
        pos = torch.arange(self.max_len - L, self.max_len, device=x.device)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = self.drop(x + self.pos(pos)) * keep
        mask = self.attention_mask(pad)
        for i, blk in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            x = blk(x, mask, last) * (keep[:, -1:] if last else keep)
        if last_only and not self.blocks:
            x = x[:, -1:]
        return self.ln(x)


@register_model("sasrec")
class SASRec(ReprSeqModel):
    @dataclass
    class Config:
        dim: int = 64
        layers: int = 2
        heads: int = 1
        dropout: float = 0.2
        emb_dropout: float | None = None  # None = dropout
        ffn_mult: int = 1
        act: str = "gelu"
        norm_first: bool = True
        item_repr: str = "id"  # id | frozen | tuned
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        fusion: str = "sum"  # sum | concat | gate
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "SASRec.Config", ctx: ModelContext):
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        self.items = ItemRepr(ctx.n_items, cfg.dim, cfg.item_repr, cfg.modalities, cfg.fusion, ctx.features,
                              ctx.compressed, key=f"models.{getattr(self, 'registry_name', 'sasrec')}")
        self.scale = math.sqrt(cfg.dim)
        self.encoder = SASRecEncoder(cfg.dim, self.max_len, cfg.layers, cfg.heads, cfg.dropout, cfg.ffn_mult,
                                     cfg.act, cfg.norm_first)
        self.emb_drop = nn.Dropout(cfg.dropout if cfg.emb_dropout is None else cfg.emb_dropout)

    def encode(self, input_ids: Tensor, table: Tensor, last_only: bool = False) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        x = self.emb_drop(F.embedding(input_ids, table) * self.scale)
        return self.encoder(x, input_ids == 0, last_only)

    def user_vectors(self, input_ids: Tensor, table: Tensor | None = None) -> Tensor:
        table = self.items.table() if table is None else table
        return self.encode(input_ids, table, last_only=True)[:, -1]
