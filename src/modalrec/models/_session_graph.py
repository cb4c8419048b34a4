"""Pieces shared by the session-graph backbones (``kdsr_graph``, ``mmsr``): prefix instances, the per-sequence
graph over unique items, the relational GAT layer of the KDSR/MMSR code (paper-notes §1.4, §2), and
:class:`SessionGraphModel`, their common frame (ID and modality tables, scoring, training loss, parameter groups).

Graph models see the whole input sequence at once (a node aggregates its neighbours in both directions), so
unlike SASRec they cannot be trained on all positions of a window in one pass without leaking the targets.
They train like the released code: every prefix of a window is one instance whose target is the next item.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from ..losses.cdl import unique_items
from .base import Batch, ModelContext, SeqRecModel

SELF, OUT, IN, BOTH = 1, 2, 3, 4  # relation labels of the released code (0 = no edge)


def prefix_instances(input_ids: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Every position t with a target becomes one left-padded prefix ``input_ids[:, :t+1]``: returns
    ``(ids [P, L'], targets [P])`` with L' the longest prefix."""
    B, L = input_ids.shape
    t = torch.arange(L, device=input_ids.device)
    src = t[None, :] - (L - 1 - t[:, None])  # [t, s]: column s of prefix t reads position s - (L-1-t)
    ids = input_ids[:, src.clamp(min=0)] * (src >= 0)  # [B, L(t), L(s)]
    sel = targets > 0
    ids, tgt = ids[sel], targets[sel]
    n = int((ids > 0).sum(1).max()) if ids.numel() else 1
    return ids[:, L - max(n, 1):], tgt


def session_graph(input_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``nodes [B, U]`` (unique items ascending, 0-padded on the left), ``alias [B, L]`` (node slot of each
    position) and ``rel [B, U, U]``: 1 self-loop of a real node, 2 i->j transition, 3 j->i, 4 both ways."""
    nodes = unique_items(input_ids)
    B, U = nodes.shape
    alias = torch.searchsorted(nodes.contiguous(), input_ids.contiguous()).clamp(max=U - 1)
    a, b = alias[:, :-1], alias[:, 1:]
    ok = (input_ids[:, :-1] > 0) & (input_ids[:, 1:] > 0) & (a != b)
    out = torch.zeros(B, U, U, dtype=torch.bool, device=input_ids.device)
    bi = torch.arange(B, device=input_ids.device)[:, None].expand_as(a)
    out[bi[ok], a[ok], b[ok]] = True
    inn = out.transpose(1, 2)
    rel = torch.zeros(B, U, U, dtype=torch.long, device=input_ids.device)
    rel[out] = OUT
    rel[inn] = IN
    rel[out & inn] = BOTH
    eye = torch.eye(U, dtype=torch.bool, device=input_ids.device)[None] & (nodes > 0)[:, :, None]
    rel[eye] = SELF
    return nodes, alias, rel


class RGATLayer(nn.Module):
    """Relational GAT of the released code: ``e_ij = LeakyReLU_0.1(a_r·(h_i ⊙ h_j)) · amp_r`` for the relation r
    of (i, j), dropout on the logits, softmax over j, ``out_i = Σ_j α_ij h_j`` with ``h = x W``. No residual."""

    def __init__(self, dim: int, n_rel: int = 4, dropout: float = 0.2):
        super().__init__()
        self.W = nn.Linear(dim, dim, bias=False)
        self.a = nn.Parameter(torch.randn(n_rel, dim) * dim ** -0.5)
        self.amp = nn.Parameter(torch.ones(n_rel))
        self.dropout = dropout

    def forward(self, x: Tensor, rel: Tensor) -> Tensor:
        h = self.W(x)  # [B, U, d]
        # a_r·(h_i ⊙ h_j) = (h_i ⊙ a_r)·h_j: one batched product per relation, never a [B, U, U, d] tensor
        per_rel = torch.stack([(h * self.a[k]) @ h.transpose(1, 2) for k in range(self.a.shape[0])], 1)
        r = (rel - 1).clamp(min=0)
        logits = per_rel.gather(1, r[:, None]).squeeze(1)
        logits = F.leaky_relu(logits, 0.1) * self.amp[r]
        logits = F.dropout(logits, self.dropout, self.training)
        logits = logits.masked_fill(rel == 0, -1e9)
        return torch.softmax(logits, -1) @ h


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


class SessionGraphModel(SeqRecModel):
    """The frame of a session-graph backbone; a subclass adds its layers and :meth:`user_vectors`.

    It owns the ID table ``id_emb`` (``N(0, 0.02)``, row 0 = 0) and the trainable modality tables ``tables``
    (:func:`modality_table`, the tables CDL supervises), created in that order first thing, so a subclass's own
    modules come after them in the seeded initialisation. ``cfg`` needs ``dim`` (= the width of m̃),
    ``modalities`` and ``max_len``. Candidates are scored against the ID embeddings only; training is full-softmax
    CE over the prefix instances of the windows (:func:`prefix_instances`).
    """

    def __init__(self, cfg, ctx: ModelContext, key: str):
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        self.id_emb = nn.Embedding(ctx.n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        self.tables = nn.ModuleDict({m: modality_table(ctx, m, key) for m in cfg.modalities})
        for m, t in self.tables.items():
            if t.weight.shape[1] != cfg.dim:
                raise ParamError(f"{key}.dim", f"must equal the width of the {m} codes ({t.weight.shape[1]})")

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        """Sequence representations ``[B, dim]`` of left-padded histories ``[B, L]``."""
        raise NotImplementedError

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
