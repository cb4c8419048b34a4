"""``mmsr_released``: MMSR (Hu et al., CIKM'23) as its released code builds it (``HoldenHu/MMSR``: ``data_utils.py``,
``model.py`` ``VLGraph``, ``aggregator.py`` ``HeteAttenLayer`` with ``fusion_type: asy_mask``; paper-notes §2).
The project's ``mmsr`` is the KDSR paper's variant (per-item modality nodes that CDL can supervise); this one is the
backbone on its own, the baseline it is compared with.

**Nodes** of a sequence's graph: its unique items, plus the *shared* image and text **cluster nodes** its items link
to. The clusters are k-means of m̃ per modality (``clusters`` centres, faiss, seeded; every item is linked to its
nearest centre, ``link_k = 1`` as in the released ``config/dataset.yaml``), so one cluster node joins different
items of the sequence. The per-item features themselves are not used. Cluster rows start from the centres,
min-max scaled to ±1/√d; every other parameter (the ID rows included) is uniform in ±1/√d (``reset_parameters``).

**Edges**: relations 1-4 (self, out, in, both) over the item transitions and, the same way, over the transitions
of the items' image clusters and of their text clusters (homogeneous); 5/6 item↔image cluster, 7/8 item↔text
cluster, 9/10 image↔text cluster of the same item, plus every node's self-loop (heterogeneous).

**Layer** (``asy_mask``): per-type projections ``Q = x W_Q[type]``, and K = V = Q (the released code overwrites its
K and V with Q; kept). Homogeneous weights: softmax over edges 1-4 of ``LeakyReLU_0.1(a_r · (h_i ⊙ h_j))``;
heterogeneous weights: softmax over the self-loops and edges 5-10 of ``LeakyReLU_0.1(q_i · k_j)``; dropout on every
weight. Non-invasive fusion: BA = the homogeneous weights computed on the heterogeneous output, applied to V;
AB = the heterogeneous weights (from Q, K), applied to V; a softmax gate (Linear-ReLU-Linear to one logit each)
mixes AB and BA. Then node dropout (``dropout_local``).

**Node input** ``[e; type embedding; position embedding] W_pt`` (no bias), the position embedding averaged over
the positions where the node occurs (counted from the end: our histories are left-padded). **Pooling**
``seq_pooling: last``: the state of the last item's node; scores = that · the ID rows, CE over every item, on every
prefix (the frame of :class:`~modalrec.models._session_graph.SessionGraphModel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, register_model
from ._session_graph import SessionGraphModel, edge_softmax, edge_sum, session_graphs

SELF, ITEM_MOD, MOD_ITEM = 1, 5, 6  # item<->modality m: 5 + 2m / 6 + 2m; image<->text: 9 / 10


def cluster_items(codes: Tensor, k: int, seed: int) -> tuple[Tensor, np.ndarray]:
    """k-means of the item rows ``codes [N+1, d]`` (row 0 = padding): ``(cluster of each item [N+1] in 1..C, 0 for
    the padding row; centres [C, d])``, C = min(k, items with codes). Items without codes (zero rows) go to the
    centre nearest the zero vector, as every item of the released code has a cluster."""
    from ..teacher.quantize import fit_kmeans

    x = codes[1:].float().cpu().numpy().astype(np.float32)
    has = np.abs(x).sum(1) > 0
    if has.sum() < 1:
        raise ParamError("models.mmsr_released.modalities", "a modality has no item with codes")
    cent = fit_kmeans(x[has], int(min(k, has.sum())), seed)
    d2 = (x ** 2).sum(1)[:, None] - 2 * x @ cent.T + (cent ** 2).sum(1)[None]
    of = np.concatenate([[0], d2.argmin(1) + 1])
    return torch.as_tensor(of, dtype=torch.long), cent


@dataclass
class Graph:
    """The batch's combined graph: nodes of type t at ``offsets[t]:offsets[t+1]`` (items, then each modality's
    cluster nodes), homogeneous and heterogeneous edges as (src, dst[, rel]) lists; ``last [B]``: the node of each
    sequence's last item."""
    ids: list[Tensor]  # per type: the item / cluster id of each node
    offsets: list[int]
    homo: tuple[Tensor, Tensor, Tensor]
    hete: tuple[Tensor, Tensor]
    pos: Tensor  # [M, L] how often each node occurs at each distance from the end
    last: Tensor

    @property
    def n(self) -> int:
        return self.offsets[-1]


def build_graph(input_ids: Tensor, cluster_of: list[Tensor]) -> Graph:
    """The released code's multi-modal graph for left-padded ``input_ids [B, L]`` (``cluster_of[m] [N+1]``)."""
    B, L = input_ids.shape
    seqs = [input_ids] + [c[input_ids] for c in cluster_of]  # a modality's sequence of cluster ids, 0 at padding
    graphs = [session_graphs(s) for s in seqs]
    offsets = np.cumsum([0] + [g.items.numel() for g in graphs]).tolist()
    valid = input_ids > 0
    at = [g.alias[valid] + o for g, o in zip(graphs, offsets)]  # per type: the node of each valid position
    hs, hd, hr = zip(*[(g.src + o, g.dst + o, g.rel) for g, o in zip(graphs, offsets)])
    n = offsets[-1]
    src, dst = [torch.arange(n, device=input_ids.device)], [torch.arange(n, device=input_ids.device)]
    for a in range(len(at)):  # item<->each modality, then modality<->modality, both ways; duplicates merged
        for b in range(a + 1, len(at)):
            src += [at[a], at[b]]
            dst += [at[b], at[a]]
    pairs = torch.unique(torch.stack([torch.cat(src), torch.cat(dst)]), dim=1)  # sorted by (src, dst)
    dist = (L - 1 - torch.arange(L, device=input_ids.device)).expand(B, L)[valid]
    pos = torch.zeros(n, L, device=input_ids.device)
    for nodes in at:
        pos.index_put_((nodes, dist), torch.ones_like(dist, dtype=pos.dtype), accumulate=True)
    return Graph([g.items for g in graphs], offsets, (torch.cat(hs), torch.cat(hd), torch.cat(hr)),
                 (pairs[0], pairs[1]), pos, graphs[0].alias[:, -1])


class ReleasedLayer(nn.Module):
    """``HeteAttenLayer`` with ``fusion_type: asy_mask`` (see the module docstring)."""

    def __init__(self, dim: int, n_types: int, dropout: float):
        super().__init__()
        self.W_Q = nn.Parameter(torch.empty(n_types, dim, dim))
        self.a = nn.Parameter(torch.empty(4, dim))  # one vector per homogeneous relation 1-4
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.dropout = dropout

    def _drop(self, w: Tensor) -> Tensor:
        return F.dropout(w, self.dropout, self.training)

    def homo_weights(self, h: Tensor, g: Graph) -> Tensor:
        src, dst, rel = g.homo
        e = F.leaky_relu((h[src] * h[dst]) @ self.a.t(), 0.1).gather(1, (rel - 1)[:, None]).squeeze(1)
        return self._drop(edge_softmax(src, g.n, e))

    def forward(self, x: Tensor, g: Graph) -> Tensor:
        o = g.offsets
        q = torch.cat([x[o[t]:o[t + 1]] @ self.W_Q[t] for t in range(len(o) - 1)])  # per-type projection
        v = q  # K = V = Q, as released
        src, dst = g.hete
        hete_logits = F.leaky_relu((q[src] * q[dst]).sum(-1), 0.1)
        hete = edge_sum(src, g.n, self._drop(edge_softmax(src, g.n, hete_logits)), v[dst])
        ba = edge_sum(g.homo[0], g.n, self.homo_weights(hete, g), v[g.homo[1]])  # homo weights from the hete output
        ab = edge_sum(src, g.n, self._drop(edge_softmax(src, g.n, hete_logits)), v[dst])  # hete weights, new dropout
        both = torch.stack([ab, ba], 1)  # [M, 2, d]
        w = torch.softmax(self.gate(both).squeeze(-1), -1)
        return (both * w.unsqueeze(-1)).sum(1)


@register_model("mmsr_released")
class MMSRReleased(SessionGraphModel):
    item_modality_tables = False

    @dataclass
    class Config:
        dim: int = 128  # the released embedding_size; = the width of m̃, whose k-means centres start the clusters
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        clusters: int = 20  # cluster_num of the released config/dataset.yaml (30 in its Beauty log)
        link_k: int = 1  # clusters an item links to (only 1: the transition graphs of the clusters need one each)
        cluster_seed: int = 2023
        layers: int = 1
        dropout_atten: float = 0.2
        dropout_local: float = 0.4
        max_len: int | None = None
        prefixes: int | None = None  # training prefixes a window: null = every one (released), k = a sample

    def __init__(self, cfg: "MMSRReleased.Config", ctx: ModelContext):
        key = f"models.{getattr(self, 'registry_name', 'mmsr_released')}"
        for name in ("clusters", "layers"):
            if getattr(cfg, name) < 1:
                raise ParamError(f"{key}.{name}", "must be >= 1")
        if cfg.link_k != 1:
            raise ParamError(f"{key}.link_k", "only 1 is supported (an item's one cluster per modality)")
        super().__init__(cfg, ctx, key)
        d, stdv = cfg.dim, 1.0 / math.sqrt(cfg.dim)
        centres = []
        for i, m in enumerate(cfg.modalities):
            if m not in ctx.compressed:
                raise ParamError(f"{key}.modalities", f"modality {m!r} has no compressed codes (compress stage)")
            if ctx.compressed[m].shape[1] != d:
                raise ParamError(f"{key}.dim", f"must equal the width of the {m} codes ({ctx.compressed[m].shape[1]})")
            of, cent = cluster_items(ctx.compressed[m], cfg.clusters, cfg.cluster_seed + i)
            self.register_buffer(f"cluster_of_{m}", of, persistent=True)
            centres.append(cent)
        self.clusters = nn.ModuleList(nn.Embedding(len(c) + 1, d, padding_idx=0) for c in centres)
        self.type_emb = nn.Embedding(1 + len(cfg.modalities), d)
        self.pos_emb = nn.Embedding(self.max_len, d)
        self.w_pos_type = nn.Linear(3 * d, d, bias=False)
        self.layers = nn.ModuleList(ReleasedLayer(d, 1 + len(cfg.modalities), cfg.dropout_atten)
                                    for _ in range(cfg.layers))
        with torch.no_grad():  # reset_parameters: every weight uniform in ±1/√d, then the cluster rows
            for p in self.parameters():
                p.uniform_(-stdv, stdv)
            self.id_emb.weight[0].zero_()
            for table, c in zip(self.clusters, centres):
                lo, hi = float(c.min()), float(c.max())
                table.weight[1:] = torch.as_tensor((c - lo) * (2 * stdv) / max(hi - lo, 1e-12) - stdv)
                table.weight[0].zero_()

    def cluster_of(self) -> list[Tensor]:
        return [getattr(self, f"cluster_of_{m}") for m in self.cfg.modalities]

    def user_vectors(self, input_ids: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        g = build_graph(input_ids, self.cluster_of())
        emb = torch.cat([self.id_emb(g.ids[0])] + [t(ids) for t, ids in zip(self.clusters, g.ids[1:])])
        types = torch.cat([torch.full((len(ids),), t, device=input_ids.device) for t, ids in enumerate(g.ids)])
        L = input_ids.shape[1]
        pos = (g.pos @ self.pos_emb.weight[:L]) / g.pos.sum(1, keepdim=True).clamp(min=1)
        h = self.w_pos_type(torch.cat([emb, self.type_emb(types), pos], -1))
        for layer in self.layers:
            h = F.dropout(layer(h, g), self.cfg.dropout_local, self.training)
        return h[g.last]
