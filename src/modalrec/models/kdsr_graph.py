"""``kdsr_graph``: the backbone KDSR's released code actually trains ("VLGraph", paper-notes §1.4), for parity with
the published Beauty numbers.

Per sequence: a graph over its unique items (SR-GNN relations self/out/in/both), one relational GAT layer over
the ID embeddings, then per node a softmax gate over four sources ``[e_id, RGAT(e_id), e_img, e_txt]``
(MLP Linear-ReLU-Linear -> 1 score each), dropout, and "last_sum" pooling: the sum of the node states of the
last ``last_n`` positions (a length-1 sequence counts its item twice, as in the code). Candidates are scored
against the **ID embeddings only**. The image/text tables are trainable ``[N+1, 128]`` embeddings initialised
from the AE codes m̃ (the tables CDL supervises); the ID table has the same width.

Training: every prefix of a window is an instance (the graph would otherwise see the targets), full-softmax CE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import Batch, ModelContext, SeqRecModel, register_model
from ._session_graph import RGATLayer, prefix_instances, session_graph


def modality_table(ctx: ModelContext, m: str, key: str) -> nn.Embedding:
    """A trainable ``[N+1, d]`` table initialised from the compress stage's m̃ (row 0 = 0)."""
    if m not in ctx.compressed:
        raise ParamError(f"{key}.modalities", f"modality {m!r} has no compressed codes (compress stage)")
    x = ctx.compressed[m].float().clone()
    if x.shape[0] != ctx.n_items + 1:
        raise ParamError(f"{key}.modalities", f"{m} codes have {x.shape[0]} rows, expected {ctx.n_items + 1}")
    x[0] = 0
    t = nn.Embedding(x.shape[0], x.shape[1], padding_idx=0)
    with torch.no_grad():
        t.weight.copy_(x)
    return t


@register_model("kdsr_graph")
class KDSRGraph(SeqRecModel):
    @dataclass
    class Config:
        dim: int = 128  # must equal the width of m̃ (compress.dim): the four gate sources are summed
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        dropout_atten: float = 0.2  # on the RGAT logits
        dropout_output: float = 0.4  # after the gate
        last_n: int = 2
        max_len: int | None = None

    def __init__(self, cfg: "KDSRGraph.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'kdsr_graph')}"
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        if cfg.last_n < 1:
            raise ParamError(f"{key}.last_n", "must be >= 1")
        self.id_emb = nn.Embedding(ctx.n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        self.tables = nn.ModuleDict({m: modality_table(ctx, m, key) for m in cfg.modalities})
        for m, t in self.tables.items():
            if t.weight.shape[1] != cfg.dim:
                raise ParamError(f"{key}.dim", f"must equal the width of the {m} codes ({t.weight.shape[1]})")
        self.rgat = RGATLayer(cfg.dim, 4, cfg.dropout_atten)
        self.gate = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.ReLU(), nn.Linear(cfg.dim, 1))
        self.drop = nn.Dropout(cfg.dropout_output)

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        nodes, alias, rel = session_graph(input_ids)
        e_id = self.id_emb(nodes)
        sources = [e_id, self.rgat(e_id, rel)] + [self.tables[m](nodes) for m in self.cfg.modalities]
        x = torch.stack(sources, 2)  # [B, U, S, d]
        w = torch.softmax(self.gate(x), 2)
        h = self.drop((w * x).sum(2)) * (nodes > 0).unsqueeze(-1)
        seq_h = h.gather(1, alias.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [B, L, d]
        length = (input_ids > 0).sum(1)
        L = input_ids.shape[1]
        out = torch.zeros_like(seq_h[:, 0])
        for k in range(self.cfg.last_n):  # last_sum; short sequences repeat their first item like the code
            pos = (L - 1 - torch.minimum(torch.full_like(length, k), (length - 1).clamp(min=0)))
            out = out + seq_h[torch.arange(len(pos), device=pos.device), pos]
        return out

    def loss(self, batch: Batch) -> Tensor:
        ids, tgt = prefix_instances(batch.input_ids, batch.targets)
        logits = self.user_vectors(ids) @ self.id_emb.weight.t()
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits.float(), tgt)

    def score_all(self, input_ids: Tensor) -> Tensor:
        s = self.user_vectors(input_ids) @ self.id_emb.weight.t()
        s[:, 0] = float("-inf")
        return s

    def item_representations(self) -> Tensor:
        return self.id_emb.weight

    def modality_tables(self) -> dict[str, nn.Embedding]:
        return dict(self.tables.items())

    def id_table(self) -> nn.Embedding:
        return self.id_emb

    def param_groups(self, lr: float) -> list[dict]:
        tables = [t.weight for t in self.tables.values()]
        seen = {id(p) for p in tables} | {id(self.id_emb.weight)}
        rest = [p for p in self.parameters() if id(p) not in seen]
        groups = [{"params": [self.id_emb.weight], "lr": lr, "name": "id"},
                  {"params": tables, "lr": lr, "name": "modality_tables"},
                  {"params": rest, "lr": lr, "name": "backbone"}]
        return [g for g in groups if g["params"]]

    @classmethod
    def required_inputs(cls, cfg) -> list[str]:
        return [f"compressed/{m}" for m in cfg.modalities]
