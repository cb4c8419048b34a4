"""The padded layout the graph backbones computed on before :class:`~modalrec.models._session_graph.SessionGraphs`:
every graph of a batch with U node slots (U = the most unique items of a graph), ``[B, U, U]`` relations, padding
nodes carried through every layer and masked at the end. The straightforward reading of the model definitions,
kept as the reference of ``test_graph_speed_equivalence.py`` and timed by ``benchmarks/kdsr.py --layouts``.
:func:`use_reference` routes a model's ``user_vectors`` (its loss and scoring) through it, on the model's own
weights. No relative imports: the benchmark loads this file by path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modalrec.models._dropout import dropped_positions
from modalrec.models._session_graph import session_graph, session_graphs


def padded_dropout(x, p, training, real, lead):
    """Inverted dropout of the padded ``x`` with the masks the flat layout draws: the first ``lead`` dims of ``x``
    flattened are its entries, ``real`` the flat indices of the real ones (nodes: ``SessionGraphs.slot``, edges:
    ``SessionGraphs.edge``) in the flat layout's order; one mask over the real entries' values, row-major, as
    ``SessionGraphs.node_dropout`` / ``edge_dropout`` draw it; padding entries get 0."""
    if not training or p == 0:
        return x
    rows = x.reshape(math.prod(x.shape[:lead]), -1)
    n = len(real) * rows.shape[1]
    keep = torch.ones(n, dtype=x.dtype, device=x.device)
    keep[dropped_positions(n, p, x.device)] = 0.0
    mask = torch.zeros_like(rows)
    mask[real] = keep.view(len(real), -1) * (1.0 / (1.0 - p))
    return (rows * mask).view_as(x)


def rgat_reference(layer, x, rel, edge):
    h = layer.W(x)  # [B, U, d]
    per_rel = torch.stack([(h * layer.a[k]) @ h.transpose(1, 2) for k in range(layer.a.shape[0])], 1)
    r = (rel - 1).clamp(min=0)
    logits = per_rel.gather(1, r[:, None]).squeeze(1)
    logits = F.leaky_relu(logits, 0.1) * layer.amp[r]
    logits = padded_dropout(logits, layer.dropout, layer.training, edge, 3)
    logits = logits.masked_fill(rel == 0, -1e9)
    return torch.softmax(logits, -1) @ h


def hete_reference(layer, x, slot):
    att = layer.q(x) @ layer.k(x).transpose(-1, -2) / math.sqrt(x.shape[-1]) + layer.bias
    att = padded_dropout(torch.softmax(att, -1), layer.dropout, layer.training, slot, 2)
    return att @ layer.v(x)


def mmsr_layer_reference(layer, x, rel, g):
    def homo(y):
        return torch.stack([rgat_reference(layer.homo, y[:, :, t], rel, g.edge) for t in range(y.shape[2])], 2)

    a = homo(hete_reference(layer.hete, x, g.slot))
    b = hete_reference(layer.hete, homo(x), g.slot)
    w = torch.softmax(layer.gate(torch.cat([a, b], -1)), -1)
    return w[..., :1] * a + w[..., 1:] * b


def mmsr_reference(model, input_ids):
    input_ids = input_ids[:, -model.max_len:]
    B, L = input_ids.shape
    nodes, alias, rel = session_graph(input_ids)
    g = session_graphs(input_ids)
    U = nodes.shape[1]
    valid_pos = input_ids > 0
    dist = (L - 1 - torch.arange(L, device=input_ids.device)).to(model.pos_emb.weight.dtype).expand(B, L) * valid_pos
    tot = torch.zeros(B, U, dtype=dist.dtype, device=dist.device).scatter_add_(1, alias, dist)
    cnt = torch.zeros(B, U, dtype=dist.dtype, device=dist.device).scatter_add_(1, alias, valid_pos.to(dist.dtype))
    pos = model.pos_emb((tot / cnt.clamp(min=1)).round().long().clamp(max=model.max_len - 1))
    x = torch.stack([model.id_emb(nodes)] + [model.tables[m](nodes) for m in model.cfg.modalities], 2)
    T = x.shape[2]
    types = model.type_emb.weight[None, None].expand(B, U, T, -1)
    h = model.w_pos_type(torch.cat([x, types, pos[:, :, None].expand(-1, -1, T, -1)], -1))
    node_ok = (nodes > 0)[:, :, None, None]
    for layer in model.layers:
        h = padded_dropout(mmsr_layer_reference(layer, h, rel, g), model.drop.p, model.training, g.slot, 2) * node_ok
    items = h[:, :, 0]
    seq_h = items.gather(1, alias.unsqueeze(-1).expand(-1, -1, items.shape[-1]))
    m = valid_pos.unsqueeze(-1).to(seq_h.dtype)
    h_long = (seq_h * m).sum(1) / m.sum(1).clamp(min=1)
    recent = valid_pos.clone()
    recent[:, : max(L - model.cfg.q, 0)] = False
    a = model.W2(torch.relu(model.W1(seq_h))).squeeze(-1).masked_fill(~recent, -1e9)
    h_short = (torch.softmax(a, 1).unsqueeze(-1) * seq_h).sum(1)
    return model.W3(torch.cat([h_short, h_long], -1))


def kdsr_graph_reference(model, input_ids):
    input_ids = input_ids[:, -model.max_len:]
    nodes, alias, rel = session_graph(input_ids)
    g = session_graphs(input_ids)
    e_id = model.id_emb(nodes)
    sources = [e_id, rgat_reference(model.rgat, e_id, rel, g.edge)] + [model.tables[m](nodes) for m in model.cfg.modalities]
    x = torch.stack(sources, 2)
    w = torch.softmax(model.gate(x), 2)
    h = padded_dropout((w * x).sum(2), model.drop.p, model.training, g.slot, 2) * (nodes > 0).unsqueeze(-1)
    seq_h = h.gather(1, alias.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    length = (input_ids > 0).sum(1)
    L = input_ids.shape[1]
    out = torch.zeros_like(seq_h[:, 0])
    for k in range(model.cfg.last_n):
        pos = (L - 1 - torch.minimum(torch.full_like(length, k), (length - 1).clamp(min=0)))
        out = out + seq_h[torch.arange(len(pos), device=pos.device), pos]
    return out


REFERENCES = {"mmsr": mmsr_reference, "kdsr_graph": kdsr_graph_reference}


def use_reference(model, arch):
    """Route the backbone's ``user_vectors`` (used by its loss and scoring) through the padded reference."""
    bb = model.backbone if hasattr(model, "backbone") else model
    bb.user_vectors = lambda ids: REFERENCES[arch](bb, ids)
    return model
