"""Pieces shared by the session-graph backbones (``kdsr_graph``, ``mmsr``): prefix instances, the per-sequence
graph over unique items, the relational GAT layer of the KDSR/MMSR code (paper-notes §1.4, §2), and
:class:`SessionGraphModel`, their common frame (ID and modality tables, scoring, training loss, parameter groups).

Graph models see the whole input sequence at once (a node aggregates its neighbours in both directions), so
unlike SASRec they cannot be trained on all positions of a window in one pass without leaking the targets.
They train like the released code: every prefix of a window is one instance whose target is the next item.

A batch of graphs is defined by the padded layout of :func:`session_graph` (``[B, U]`` nodes, ``[B, U, U]``
relations, U = the most unique items of a graph in the batch) and computed on :class:`SessionGraphs`: the real
nodes only, as one flat list, and the edges as one list. The prefixes of a window differ a lot in size (a batch of
64 windows has ~400 prefixes of 1 to 50 items), so the padded layout is mostly padding (4.1x more node rows on the
synthetic default) and ``[B, U, U]`` mostly non-edges (32x more entries than edges). The layout changes nothing
else: a padding node has no edges, so it never reached a real node (its attention weight was exactly 0). Dropout
masks are drawn for the real nodes and edges only (:meth:`SessionGraphs.node_dropout`,
:meth:`SessionGraphs.edge_dropout`, with :func:`~modalrec.models._dropout.dropout`, which draws only the dropped
positions): drawing them for the padded layout, as ``nn.Dropout`` on it would, was 27% of an MMSR step on the
synthetic default, for values that were thrown away. The padded reference draws the same masks and scatters them
into its layout, so only the order of some float sums differs (``tests/kdsr/test_graph_speed_equivalence.py``
trains both layouts side by side).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from ..losses.cdl import unique_items
from ._dropout import _Dropout, dropout, dropped_positions
from .base import Batch, ModelContext, SeqRecModel, catalogue_ce, catalogue_logits

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


def sample_targets(targets: Tensor, k: int) -> Tensor:
    """``targets`` with all but ``k`` of each window's targets zeroed: the k kept uniformly at random, without
    replacement, from the torch RNG (every target when a window has at most k). The graph backbones' ``prefixes``
    option: a window of L targets costs L prefix graphs of up to L nodes each, so on long histories (MovieLens-100K:
    windows of 50, ~330 s an MMSR epoch on one thread) a sample of the prefixes per batch, a different one every
    epoch, makes an epoch about L/k times cheaper."""
    sel = targets > 0
    r = torch.rand(targets.shape, device=targets.device).masked_fill(~sel, 2.0)
    keep = torch.zeros_like(sel).scatter_(1, r.topk(min(k, r.shape[1]), dim=1, largest=False).indices, True)
    return targets * (sel & keep)


def session_graph(input_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The padded definition: ``nodes [B, U]`` (unique items ascending, 0-padded on the left), ``alias [B, L]``
    (node slot of each position) and ``rel [B, U, U]``: 1 self-loop of a real node, 2 i->j transition, 3 j->i,
    4 both ways."""
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


@dataclass
class SessionGraphs:
    """The graphs of :func:`session_graph` with their M real nodes only (graph by graph, items ascending) and their
    E edges (self-loops included) as one list, ordered by (source node, target node) like the rows of ``rel``."""

    items: Tensor  # [M] the item of each node
    slot: Tensor  # [M] its row in the padded [B * U] node layout
    alias: Tensor  # [B, L] the node of each position, -1 at padding
    src: Tensor  # [E] the node that attends (row i of rel)
    dst: Tensor  # [E] the node it attends to (column j)
    rel: Tensor  # [E] the relation of (i, j), 1-4
    edge: Tensor  # [E] the entry of (i, j) in the padded [B * U * U] relation layout

    def node_dropout(self, x: Tensor, p: float, training: bool) -> Tensor:
        """Inverted dropout of node values ``[M, ...]`` (:func:`~modalrec.models._dropout.dropout`: one mask over
        the real nodes' values, row-major)."""
        return dropout(x, p, training)

    def edge_dropout(self, x: Tensor, p: float, training: bool) -> Tensor:
        """Inverted dropout of edge values ``[E, *S]``: one mask over the E edges for each index of S, drawn one
        after the other in row-major order of S (as separate calls on those slices would)."""
        if not training or p == 0:
            return x
        if x.dim() == 1 or x.device.type != "cpu":
            return dropout(x, p, True)
        E, S = x.shape[0], x[0].numel()
        pos = torch.cat([dropped_positions(E, p, x.device) * S + s for s in range(S)])
        return _Dropout.apply(x, pos, 1.0 / (1.0 - p))

    def attend(self, logits: Tensor, values: Tensor) -> Tensor:
        """``out_i = Σ_j softmax_j(logits_ij) · values_ij`` over the edges (i, j) of each node i: ``logits [E, *S]``,
        ``values [E, *S, d]`` -> ``[M, *S, d]``. Every node has its self-loop, so no sum is empty."""
        M, src = self.items.numel(), self.src
        return edge_sum(src, M, edge_softmax(src, M, logits), values)

    def per_position(self, h: Tensor) -> Tensor:
        """Node states ``[M, d]`` -> ``[B, L, d]`` states of the positions (zeros at padding)."""
        return torch.cat([h.new_zeros((1,) + h.shape[1:]), h])[self.alias + 1]


def edge_softmax(src: Tensor, n_nodes: int, logits: Tensor) -> Tensor:
    """Softmax of edge logits ``[E, *S]`` over the edges leaving each node (``src [E]``): attention weights."""
    idx = src.view((-1,) + (1,) * (logits.dim() - 1)).expand_as(logits)
    top = logits.new_full((n_nodes,) + logits.shape[1:], float("-inf"))
    top = top.scatter_reduce(0, idx, logits.detach(), "amax")  # the softmax is shift-invariant: no gradient
    ex = (logits - top[src]).exp()
    den = ex.new_zeros(top.shape).index_add_(0, src, ex)
    return ex / den[src]


def edge_sum(src: Tensor, n_nodes: int, weights: Tensor, values: Tensor) -> Tensor:
    """``out_i = Σ_(i,j) weights_ij · values_ij``: ``weights [E, *S]``, ``values [E, *S, d]`` -> ``[n_nodes, *S, d]``."""
    weighted = weights.unsqueeze(-1) * values  # (float32 under autocast, like the logits)
    return weighted.new_zeros((n_nodes,) + weighted.shape[1:]).index_add_(0, src, weighted)


def session_graphs(input_ids: Tensor) -> SessionGraphs:
    """:func:`session_graph` as :class:`SessionGraphs`."""
    nodes, alias, rel = session_graph(input_ids)
    B, U = nodes.shape
    real = (nodes > 0).flatten()
    node_of = torch.cumsum(real, 0) - 1  # padded slot -> node
    slot = real.nonzero().squeeze(1)
    e = rel.flatten().nonzero().squeeze(1)  # row-major: by (graph, row), then by column
    src = node_of[e // U]
    dst = node_of[(e // (U * U)) * U + e % U]
    pos_alias = torch.where(input_ids > 0, node_of[torch.arange(B, device=e.device)[:, None] * U + alias], -1)
    return SessionGraphs(nodes.flatten()[slot], slot, pos_alias, src, dst, rel.flatten()[e], e)


class RGATLayer(nn.Module):
    """Relational GAT of the released code: ``e_ij = LeakyReLU_0.1(a_r·(h_i ⊙ h_j)) · amp_r`` for the relation r
    of (i, j), dropout on the logits, softmax over the neighbours j, ``out_i = Σ_j α_ij h_j`` with ``h = x W``.
    No residual. ``x [M, *S, d]``: node states of :class:`SessionGraphs`, with S independent channels on the same
    graph (MMSR's node types)."""

    def __init__(self, dim: int, n_rel: int = 4, dropout: float = 0.2):
        super().__init__()
        self.W = nn.Linear(dim, dim, bias=False)
        self.a = nn.Parameter(torch.randn(n_rel, dim) * dim ** -0.5)
        self.amp = nn.Parameter(torch.ones(n_rel))
        self.dropout = dropout

    def forward(self, x: Tensor, g: SessionGraphs) -> Tensor:
        h = self.W(x)
        h_dst = h.index_select(0, g.dst)  # [E, *S, d]
        e = F.leaky_relu((h.index_select(0, g.src) * h_dst) @ self.a.t(), 0.1) * self.amp  # [E, *S, n_rel]: every r
        r = (g.rel - 1).view((-1,) + (1,) * (e.dim() - 1)).expand(e.shape[:-1] + (1,))
        e = g.edge_dropout(e.gather(-1, r).squeeze(-1), self.dropout, self.training)  # each edge's own relation
        return g.attend(e, h_dst)


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
    ``modalities``, ``max_len`` and ``prefixes``. Candidates are scored against the ID embeddings only; training is
    full-softmax CE over the prefix instances of the windows (:func:`prefix_instances`; with ``prefixes: k``, k of
    them a window, :func:`sample_targets`).
    """

    item_modality_tables = True  # False: no per-item modality tables (MMSR as released has cluster nodes instead)

    def __init__(self, cfg, ctx: ModelContext, key: str):
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        self.id_emb = nn.Embedding(ctx.n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        self.tables = nn.ModuleDict({m: modality_table(ctx, m, key) for m in cfg.modalities}
                                    if self.item_modality_tables else {})
        k = cfg.prefixes
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ParamError(f"{key}.prefixes", f"must be an integer >= 1 or null (every prefix), got {k!r}")
        for m, t in self.tables.items():
            if t.weight.shape[1] != cfg.dim:
                raise ParamError(f"{key}.dim", f"must equal the width of the {m} codes ({t.weight.shape[1]})")

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        """Sequence representations ``[B, dim]`` of left-padded histories ``[B, L]``."""
        raise NotImplementedError

    output_loss = None  # a sampled / in-batch softmax (train.loss) instead of the full one

    def set_output_loss(self, loss) -> None:
        self.output_loss = loss

    def loss(self, batch: Batch) -> Tensor:
        targets = batch.targets
        if self.cfg.prefixes is not None:  # k prefixes a window (sample_targets)
            targets = sample_targets(targets, self.cfg.prefixes)
        ids, tgt = prefix_instances(batch.input_ids, targets)
        if self.output_loss is not None:  # the prefixes are the positions targets > 0, row-major
            return self.output_loss(self.user_vectors(ids), self.id_emb.weight, tgt, batch.input_ids, targets)
        return catalogue_ce(self.user_vectors(ids), self.id_emb.weight, tgt)

    def score_all(self, input_ids: Tensor) -> Tensor:
        return catalogue_logits(self.user_vectors(input_ids), self.id_emb.weight)

    def score_factors(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(user vectors, ID table)`` with ``score_all = users @ table.T``: the evaluator's chunked ranking."""
        return self.user_vectors(input_ids), self.id_emb.weight

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
