"""SR-GNN (Wu et al., AAAI 2019): a session graph per history, a gated graph network over it, a soft-attention readout.

Follows RecBole's ``srgnn.py`` (a port of the official CRIPAC-DIG/SR-GNN code), step by step:

1. **Session graph.** The nodes are the history's unique items; each transition ``s_t -> s_{t+1}`` between two real
   positions is an edge (weight 1, repeated transitions counted once, a repeat ``a -> a`` is a self-loop). Two
   normalised adjacencies: the *incoming* one averages a node's predecessors (``A_in[i, j] = adj[j, i] / indeg(i)``),
   the *outgoing* one its successors (``A_out[i, j] = adj[i, j] / outdeg(i)``), RecBole's ``A[:, :, :n]`` and
   ``A[:, :, n:2n]``.
2. **Gated GNN** (``step`` rounds): ``a = [A_in (h W_in + b_in) + b_iah, A_out (h W_out + b_out) + b_ioh]``, then a
   GRU-style update of every node state from ``a`` (the GGNN cell of Li et al.).
3. **Readout.** The positions' node states ``s_t``; the last one ``s_n`` is the local interest; a soft attention
   ``alpha_t = q^T sigmoid(W_1 s_n + W_2 s_t)`` gives the global one ``s_g = sum_t alpha_t s_t``; the session vector is
   ``W_3 [s_g; s_n]``, scored against every item embedding.

Training: a graph sees the whole history at once, so (like RecBole's prefix augmentation) every position of a
training window with a target becomes one instance, its prefix. Full-softmax cross-entropy, as RecBole's CE loss.
The prefixes of a batch range from 1 to ``max_len`` items, so they are sorted by length and run in chunks of
``PREFIX_CHUNK``, each cropped to its own longest prefix: the graphs of a chunk are then about as large as their
histories instead of the batch's longest (a result never depends on padding, so only float rounding changes).

Differences from RecBole: histories are left-padded (contract) rather than right-padded, and the node order is
ascending item id without a padding node (a permutation of the same graph: the result is identical); the padding
row of the item table is kept at zero after RecBole's uniform initialisation (it is never an input anyway); the
graph is built with tensor operations on the model's device instead of NumPy loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, ModelContext, SeqRecModel, catalogue_ce, catalogue_logits, register_model

PREFIX_CHUNK = 512  # prefixes per forward pass in training (sorted by length)


def prefixes(input_ids: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """One left-padded instance per position with a target: ``(ids [P, L'], targets [P])``, where instance p is the
    history up to and including its position, cropped to the longest prefix L'."""
    B, L = input_ids.shape
    t = torch.arange(L, device=input_ids.device)
    src = t[None, :] - (L - 1 - t[:, None])  # [t, s]: column s of the prefix ending at t reads position s-(L-1-t)
    ids = input_ids[:, src.clamp(min=0)] * (src >= 0)  # [B, L, L]
    sel = targets > 0
    ids, tgt = ids[sel], targets[sel]
    n = int((ids > 0).sum(1).max()) if ids.numel() else 1
    return ids[:, L - max(n, 1):], tgt


def session_graph(ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The session graphs of left-padded histories ``ids [B, L]``.

    Returns ``nodes [B, U]`` (each history's unique items, ascending, 0 after them), ``alias [B, L]`` (the node of
    each position; 0 at padding, which the readout masks), and the normalised incoming and outgoing adjacencies
    ``A_in, A_out [B, U, U]`` (definitions in the module docstring)."""
    B, L = ids.shape
    srt, order = ids.sort(1)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first &= srt > 0
    U = max(int(first.sum(1).max()), 1)
    node_of_sorted = (first.long().cumsum(1) - 1).clamp(min=0)
    alias = torch.zeros_like(ids).scatter_(1, order, node_of_sorted)
    rows = torch.arange(B, device=ids.device)[:, None].expand(B, L)
    nodes = ids.new_zeros(B, U)
    nodes[rows[first], node_of_sorted[first]] = srt[first]
    step = (ids[:, :-1] > 0) & (ids[:, 1:] > 0)
    adj = torch.zeros(B, U, U, device=ids.device)
    adj[rows[:, 1:][step], alias[:, :-1][step], alias[:, 1:][step]] = 1.0
    a_in = adj.transpose(1, 2) / adj.sum(1).clamp(min=1).unsqueeze(2)  # row i: predecessors / indeg(i)
    a_out = adj / adj.sum(2).clamp(min=1).unsqueeze(2)  # row i: successors / outdeg(i)
    return nodes, alias, a_in, a_out


class GatedGNN(nn.Module):
    """RecBole's ``GNN``: ``step`` rounds of message passing along both adjacencies and a GRU-style node update."""

    def __init__(self, dim: int, step: int = 1):
        super().__init__()
        self.step = step
        self.w_ih = nn.Parameter(torch.empty(3 * dim, 2 * dim))
        self.w_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_ih = nn.Parameter(torch.empty(3 * dim))
        self.b_hh = nn.Parameter(torch.empty(3 * dim))
        self.b_iah = nn.Parameter(torch.empty(dim))
        self.b_ioh = nn.Parameter(torch.empty(dim))
        self.edge_in = nn.Linear(dim, dim)
        self.edge_out = nn.Linear(dim, dim)

    def cell(self, a_in: Tensor, a_out: Tensor, h: Tensor) -> Tensor:
        msg = torch.cat([a_in @ self.edge_in(h) + self.b_iah, a_out @ self.edge_out(h) + self.b_ioh], -1)
        i_r, i_z, i_n = F.linear(msg, self.w_ih, self.b_ih).chunk(3, -1)
        h_r, h_z, h_n = F.linear(h, self.w_hh, self.b_hh).chunk(3, -1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return (1 - update) * h + update * new

    def forward(self, a_in: Tensor, a_out: Tensor, h: Tensor) -> Tensor:
        for _ in range(self.step):
            h = self.cell(a_in, a_out, h)
        return h


@register_model("srgnn")
class SRGNN(SeqRecModel):
    @dataclass
    class Config:
        dim: int = 64  # RecBole: embedding_size 64
        step: int = 1  # GNN rounds (RecBole: 1)
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "SRGNN.Config", ctx: ModelContext):
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        self.item_emb = nn.Embedding(ctx.n_items + 1, d, padding_idx=0)
        self.gnn = GatedGNN(d, cfg.step)
        self.linear_one = nn.Linear(d, d)
        self.linear_two = nn.Linear(d, d)
        self.linear_three = nn.Linear(d, 1, bias=False)
        self.linear_transform = nn.Linear(2 * d, d)
        stdv = 1.0 / math.sqrt(d)  # RecBole's _reset_parameters: every parameter ~ U(-1/sqrt(d), 1/sqrt(d))
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        """Session vectors ``[B, dim]`` of left-padded histories ``[B, L]``."""
        ids = input_ids[:, -self.max_len:]
        nodes, alias, a_in, a_out = session_graph(ids)
        h = self.gnn(a_in, a_out, self.item_emb(nodes))  # [B, U, d]
        seq = h.gather(1, alias.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [B, L, d] node state per position
        last = seq[:, -1]
        alpha = self.linear_three(torch.sigmoid(self.linear_one(last).unsqueeze(1) + self.linear_two(seq)))
        glob = (alpha * seq * (ids > 0).unsqueeze(-1)).sum(1)
        return self.linear_transform(torch.cat([glob, last], -1))

    def loss(self, batch: Batch) -> Tensor:
        ids, tgt = prefixes(batch.input_ids, batch.targets)
        lengths = (ids > 0).sum(1)
        total = ids.new_zeros((), dtype=torch.float32)
        for chunk in lengths.argsort().split(PREFIX_CHUNK):
            n = int(lengths[chunk[-1]])  # the chunk's longest prefix (sorted ascending)
            total = total + catalogue_ce(self.user_vectors(ids[chunk, ids.shape[1] - n:]), self.item_emb.weight,
                                         tgt[chunk], reduction="sum")
        return total / len(tgt)

    def score_all(self, input_ids: Tensor) -> Tensor:
        return catalogue_logits(self.user_vectors(input_ids), self.item_emb.weight)

    def item_representations(self) -> Tensor:
        return self.item_emb.weight
