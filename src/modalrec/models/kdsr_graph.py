"""``kdsr_graph``: the backbone KDSR's released code actually trains ("VLGraph", paper-notes §1.4), for parity with
the published Beauty numbers.

Per sequence: a graph over its unique items (SR-GNN relations self/out/in/both), one relational GAT layer over
the ID embeddings, then per node a softmax gate over four sources ``[e_id, RGAT(e_id), e_img, e_txt]``
(MLP Linear-ReLU-Linear -> 1 score each), dropout, and "last_sum" pooling: the sum of the node states of the
last ``last_n`` positions (a length-1 sequence counts its item twice, as in the code). Candidates are scored
against the **ID embeddings only**. The image/text tables are trainable ``[N+1, 128]`` embeddings initialised
from the AE codes m̃ (the tables CDL supervises); the ID table has the same width.

Training: every prefix of a window is an instance (the graph would otherwise see the targets), full-softmax CE.
The tables, scoring, loss and parameter groups are :class:`~modalrec.models._session_graph.SessionGraphModel`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, register_model
from ._session_graph import RGATLayer, SessionGraphModel, session_graphs


@register_model("kdsr_graph")
class KDSRGraph(SessionGraphModel):
    @dataclass
    class Config:
        dim: int = 128  # must equal the width of m̃ (compress.dim): the four gate sources are summed
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        dropout_atten: float = 0.2  # on the RGAT logits
        dropout_output: float = 0.4  # after the gate
        last_n: int = 2
        max_len: int | None = None
        prefixes: int | None = None  # training prefixes a window: null = every one (released), k = a sample

    def __init__(self, cfg: "KDSRGraph.Config", ctx: ModelContext):
        key = f"models.{getattr(self, 'registry_name', 'kdsr_graph')}"
        if cfg.last_n < 1:
            raise ParamError(f"{key}.last_n", "must be >= 1")
        super().__init__(cfg, ctx, key)  # cfg, max_len, the ID table id_emb, the modality tables
        self.rgat = RGATLayer(cfg.dim, 4, cfg.dropout_atten)
        self.gate = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.ReLU(), nn.Linear(cfg.dim, 1))
        self.drop = nn.Dropout(cfg.dropout_output)

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        g = session_graphs(input_ids)
        e_id = self.id_emb(g.items)
        sources = [e_id, self.rgat(e_id, g)] + [self.tables[m](g.items) for m in self.cfg.modalities]
        x = torch.stack(sources, 1)  # [M, S, d]
        w = torch.softmax(self.gate(x), 1)
        seq_h = g.per_position(g.node_dropout((w * x).sum(1), self.drop.p, self.training))  # [B, L, d]
        length = (input_ids > 0).sum(1)
        L = input_ids.shape[1]
        out = torch.zeros_like(seq_h[:, 0])
        for k in range(self.cfg.last_n):  # last_sum; short sequences repeat their first item like the code
            pos = (L - 1 - torch.minimum(torch.full_like(length, k), (length - 1).clamp(min=0)))
            out = out + seq_h[torch.arange(len(pos), device=pos.device), pos]
        return out
