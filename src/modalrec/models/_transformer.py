"""The causal Transformer pieces the RecBole-style baselines share (FDSA, UniSRec; DIF-SR and NOVA use the mask):
RecBole's ``TransformerLayer`` (post-LN attention and GELU feed-forward, LayerNorm eps 1e-12) and the causal mask
over left-padded histories. Initialisation is the model's (``recbole_init``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attention_mask(pad: Tensor) -> Tensor:
    """Boolean ``[B, 1, L, L]``: causal, padding keys hidden, each position sees itself (no empty rows)."""
    L = pad.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=pad.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=pad.device)
    return ((causal & ~pad[:, None, :]) | eye)[:, None]


class TransformerLayer(nn.Module):
    """RecBole's TransformerLayer: multi-head attention and feed-forward, each followed by dropout, residual, LN."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.dense = nn.Linear(dim, dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-12), nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = self.ln1(x + self.drop(self.dense(y.transpose(1, 2).reshape(B, L, D))))
        return self.ln2(x + self.drop(self.ffn(x)))
