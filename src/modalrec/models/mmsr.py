"""``mmsr``: the KDSR paper's best Amazon backbone (MMSR, CIKM'23), with per-item modality nodes so CDL has
trainable modality embeddings to supervise (paper-notes §2; KDSR §3.3 "initializing e_a, e_b, e_v as distinct
node types").

Graph per sequence: for each unique item one **item** node (ID embedding) and one node per modality (its row
of the trainable table initialised from m̃). Edges:

- homogeneous (relations 1-4: self/out/in/both): the sequence's transitions, repeated among the item nodes, among
  the image nodes and among the text nodes (one relational GAT shared by the node types);
- heterogeneous: each node to the other-type nodes of the *same* item (item↔image, item↔text, image↔text, the
  code's relations 5-10) plus itself, by multi-head-free QKV attention with a learned bias per (type, type).

A layer composes both orders asymmetrically, ``homo(hete(h))`` and ``hete(homo(h))``, mixed by a softmax gate
(MMSR's ``asy_mask`` fusion; K and V get their own projections here, not the released code's K = V = Q). Nodes
start from ``W_pt [x; type embedding; position embedding]`` (position = mean distance from the end of the
positions where the item occurs).

Sequence representation (KDSR Eq. 6): long-term ``h_l`` = mean of the item-node states over the positions,
short-term ``h_s = Σ α_i h_i`` over the last ``q`` positions with ``α = softmax(W2 ReLU(W1 h_i))``,
``P = W3 [h_s; h_l]``. Scores: ``P · e_v`` with the ID embeddings. Trained on every prefix of a window (the
tables, scoring, loss and parameter groups are :class:`~modalrec.models._session_graph.SessionGraphModel`'s).
Node states are ``[M, T, d]``: the M real nodes of the batch's graphs (:class:`SessionGraphs`), T node types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, register_model
from ._session_graph import RGATLayer, SessionGraphModel, SessionGraphs, session_graphs


class HeteLayer(nn.Module):
    """Attention over the T type-nodes of the same item ``[M, T, d]`` with a learned bias per type pair."""

    def __init__(self, dim: int, n_types: int, dropout: float):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(n_types, n_types))
        self.dropout = dropout

    def forward(self, x: Tensor, g: SessionGraphs) -> Tensor:
        att = self.q(x) @ self.k(x).transpose(-1, -2) / math.sqrt(x.shape[-1]) + self.bias
        att = g.node_dropout(torch.softmax(att, -1), self.dropout, self.training)
        return att @ self.v(x)


class MMSRLayer(nn.Module):
    def __init__(self, dim: int, n_types: int, dropout: float):
        super().__init__()
        self.homo = RGATLayer(dim, 4, dropout)
        self.hete = HeteLayer(dim, n_types, dropout)
        self.gate = nn.Linear(2 * dim, 2)

    def forward(self, x: Tensor, g: SessionGraphs) -> Tensor:
        # homo: the same transition graph in every node type (one RGAT over the T types as channels)
        a = self.homo(self.hete(x, g), g)  # hete -> homo
        b = self.hete(self.homo(x, g), g)  # homo -> hete
        w = torch.softmax(self.gate(torch.cat([a, b], -1)), -1)
        return w[..., :1] * a + w[..., 1:] * b


@register_model("mmsr")
class MMSR(SessionGraphModel):
    @dataclass
    class Config:
        dim: int = 128  # must equal the width of m̃ (compress.dim)
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        layers: int = 1
        q: int = 3  # short-term window (last q positions)
        dropout_atten: float = 0.2
        dropout_local: float = 0.4
        max_len: int | None = None
        prefixes: int | None = None  # training prefixes a window: null = every one (released), k = a sample

    def __init__(self, cfg: "MMSR.Config", ctx: ModelContext):
        key = f"models.{getattr(self, 'registry_name', 'mmsr')}"
        if cfg.q < 1 or cfg.layers < 1:
            raise ParamError(f"{key}.q" if cfg.q < 1 else f"{key}.layers", "must be >= 1")
        super().__init__(cfg, ctx, key)  # cfg, max_len, the ID table id_emb, the modality tables
        d = cfg.dim
        n_types = 1 + len(cfg.modalities)
        self.type_emb = nn.Embedding(n_types, d)
        self.pos_emb = nn.Embedding(self.max_len, d)
        nn.init.normal_(self.type_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.w_pos_type = nn.Linear(3 * d, d)
        self.layers = nn.ModuleList(MMSRLayer(d, n_types, cfg.dropout_atten) for _ in range(cfg.layers))
        self.drop = nn.Dropout(cfg.dropout_local)
        self.W1, self.W2 = nn.Linear(d, d), nn.Linear(d, 1)
        self.W3 = nn.Linear(2 * d, d)

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        B, L = input_ids.shape
        g = session_graphs(input_ids)
        M = g.items.numel()
        valid_pos = input_ids > 0
        # mean distance-from-the-end of the positions where each node's item occurs
        node, dist = g.alias[valid_pos], (L - 1 - torch.arange(L, device=input_ids.device)).expand(B, L)[valid_pos]
        tot = torch.zeros(M, device=input_ids.device).index_add_(0, node, dist.float())
        cnt = torch.zeros(M, device=input_ids.device).index_add_(0, node, torch.ones_like(dist, dtype=torch.float))
        pos = (tot / cnt).round().long().clamp(max=self.max_len - 1)  # [M]
        # h = W_pt [x; type; pos] + b, as W_x x + W_t type + W_p pos + b: the x part once per item of the batch
        # (the prefixes of a window share their items), the pos part once per position embedding
        W_x, W_t, W_p = self.w_pos_type.weight.split(self.cfg.dim, 1)
        items, node_item = torch.unique(g.items, return_inverse=True)
        x = torch.stack([self.id_emb(items)] + [self.tables[m](items) for m in self.cfg.modalities], 1)  # [I, T, d]
        h = (x @ W_x.t())[node_item] + (self.pos_emb.weight @ W_p.t())[pos, None] \
            + F.linear(self.type_emb.weight, W_t, self.w_pos_type.bias)  # [M, T, d]
        for layer in self.layers:
            h = g.node_dropout(layer(h, g), self.drop.p, self.training)
        seq_h = g.per_position(h[:, 0])  # item-node states of the positions [B, L, d]
        m = valid_pos.unsqueeze(-1).float()
        h_long = (seq_h * m).sum(1) / m.sum(1).clamp(min=1)
        recent = valid_pos[:, -self.cfg.q:]  # the last q positions
        a = self.W2(torch.relu(self.W1(seq_h[:, -self.cfg.q:]))).squeeze(-1).masked_fill(~recent, -1e9)
        h_short = (torch.softmax(a, 1).unsqueeze(-1) * seq_h[:, -self.cfg.q:]).sum(1)
        return self.W3(torch.cat([h_short, h_long], -1))
