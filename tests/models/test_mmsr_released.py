"""MMSR as released (``mmsr_released``): the multi-modal graph with shared cluster nodes against a hand-built
example, its ``asy_mask`` layer against a dense re-computation of the released code's formulas, the initialisation
scale, and a smoke test (trains, scores the catalogue, padding never wins)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from modalrec.data.batching import eval_instances, train_batches, train_windows
from modalrec.models import ModelContext, build_model
from modalrec.models.mmsr_released import ReleasedLayer, build_graph

N, MAXLEN, D = 30, 8, 16


def test_graph_links_items_through_shared_cluster_nodes():
    ids = torch.tensor([[0, 0, 3, 5, 3]])
    image = torch.zeros(N + 1, dtype=torch.long)
    text = torch.zeros(N + 1, dtype=torch.long)
    image[3], image[5] = 1, 1  # items 3 and 5 share one image cluster
    text[3], text[5] = 2, 1
    g = build_graph(ids, [image, text])
    # nodes: items {3, 5}, image clusters {1}, text clusters {1, 2} (ascending within each type)
    assert [t.tolist() for t in g.ids] == [[3, 5], [1], [1, 2]] and g.offsets == [0, 2, 3, 5]
    homo = sorted(zip(*(t.tolist() for t in g.homo)))
    # items 3 <-> 5 both ways (4); image cluster: a self-loop only (1 -> 1 -> 1); text 2 <-> 1 both ways
    assert homo == [(0, 0, 1), (0, 1, 4), (1, 0, 4), (1, 1, 1), (2, 2, 1), (3, 3, 1), (3, 4, 4), (4, 3, 4), (4, 4, 1)]
    hete = set(zip(*(t.tolist() for t in g.hete)))
    cross = {(0, 2), (0, 4), (2, 4), (1, 2), (1, 3), (2, 3)}  # (item, image), (item, text), (image, text) per position
    assert hete == {(i, i) for i in range(5)} | cross | {(b, a) for a, b in cross}
    assert {a for a, b in hete if b == 2 and a < 2} == {0, 1}  # the shared image node joins both items
    # positions counted from the end: item 3 at distances 2 and 0, item 5 at 1; the image node at all three
    assert g.pos[0].tolist()[:3] == [1, 0, 1] and g.pos[1].tolist()[:3] == [0, 1, 0]
    assert g.pos[2].tolist()[:3] == [1, 1, 1]
    assert g.last.tolist() == [0]


def test_layer_equals_the_released_formulas_densely():
    torch.manual_seed(0)
    ids = torch.tensor([[0, 4, 2, 4, 7], [0, 0, 0, 2, 9]])
    image = torch.randint(1, 4, (N + 1,)); text = torch.randint(1, 3, (N + 1,))
    image[0] = text[0] = 0
    g = build_graph(ids, [image, text])
    layer = ReleasedLayer(D, 3, dropout=0.0).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    x = torch.randn(g.n, D)
    with torch.no_grad():
        got = layer(x, g)
    types = torch.cat([torch.full((len(t),), i) for i, t in enumerate(g.ids)])
    q = torch.stack([x[i] @ layer.W_Q[types[i]] for i in range(g.n)]).detach()
    homo_rel = torch.zeros(g.n, g.n, dtype=torch.long)
    homo_rel[g.homo[0], g.homo[1]] = g.homo[2]
    hete = torch.zeros(g.n, g.n, dtype=torch.bool)
    hete[g.hete[0], g.hete[1]] = True

    def homo_w(h):  # released calculate_homo_hidden: e_ij = LeakyReLU(a_r . (h_i * h_j)) on relation r's edges
        e = torch.full((g.n, g.n), -9e15)
        for r in range(1, 5):
            s = F.leaky_relu(torch.einsum("id,jd,d->ij", h, h, layer.a[r - 1].detach()), 0.1)
            e = torch.where(homo_rel == r, s, e)
        return torch.softmax(e, -1)

    hete_w = torch.softmax(F.leaky_relu(torch.where(hete, q @ q.t(), torch.tensor(-9e15)), 0.1), -1)
    hete_out = hete_w @ q
    ba, ab = homo_w(hete_out) @ q, hete_w @ q
    both = torch.stack([ab, ba], 1)
    with torch.no_grad():
        w = torch.softmax(layer.gate(both).squeeze(-1), -1)
    torch.testing.assert_close(got, (both * w.unsqueeze(-1)).sum(1), atol=1e-5, rtol=1e-5)


def _ctx(seed=0):
    gen = torch.Generator().manual_seed(seed)
    comp = {m: torch.sigmoid(torch.randn(N + 1, D, generator=gen)) for m in ("image", "text")}
    for c in comp.values():
        c[0] = 0
    comp["image"][5] = 0  # an item without an image
    return ModelContext(n_items=N, max_len=MAXLEN, compressed=comp)


def test_initialisation_scale_is_the_released_one():
    torch.manual_seed(0)
    model = build_model("mmsr_released", {"dim": D, "clusters": 4}, _ctx())
    stdv = 1 / math.sqrt(D)
    for t in model.clusters:  # centres min-max scaled onto [-1/sqrt(d), 1/sqrt(d)]
        rows = t.weight[1:]
        assert abs(rows.min().item() + stdv) < 1e-6 and abs(rows.max().item() - stdv) < 1e-6
        assert t.weight.shape[0] == 5 and t.weight[0].abs().sum() == 0
    assert model.id_emb.weight.abs().max() <= stdv and model.id_emb.weight[0].abs().sum() == 0
    assert model.id_emb.weight[1:].std() > 0.5 * stdv / math.sqrt(3)  # uniform, not N(0, 0.02)
    assert model.modality_tables() == {}  # no per-item modality rows: nothing for CDL
    of = model.cluster_of()
    assert all(o[0] == 0 and o[1:].min() >= 1 and o[1:].max() <= 4 for o in of)


def test_trains_scores_and_ignores_padding():
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(60):
        start, n = int(rng.integers(1, N + 1)), int(rng.integers(5, 12))
        seqs.append((start - 1 + np.arange(n)) % N + 1)
    nt, nv = np.array([len(s) - 2 for s in seqs]), np.ones(len(seqs), dtype=int)
    torch.manual_seed(0)
    model = build_model("mmsr_released", {"dim": D, "clusters": 4}, _ctx())
    opt = torch.optim.Adam([g for g in model.param_groups(1e-2)])
    w = train_windows(seqs, nt, MAXLEN)
    epoch_loss = []
    for epoch in range(1, 6):
        model.train()
        losses = []
        for b in train_batches(w, 16, seed=0, epoch=epoch):
            loss = model.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch_loss.append(np.mean(losses))
    assert epoch_loss[-1] < 0.9 * epoch_loss[0], epoch_loss
    model.eval()
    _, inp, _ = next(eval_instances(seqs, nt, nv, "test", MAXLEN).batches(64))
    with torch.no_grad():
        s = model.score_all(inp)
        short = model.score_all(torch.tensor([[3, 7, 9, 9]]))
        padded = model.score_all(torch.tensor([[0, 0, 0, 3, 7, 9, 9], [1, 2, 3, 4, 5, 6, 7]]))[:1]
    assert s.shape == (inp.shape[0], N + 1) and torch.isinf(s[:, 0]).all() and (s.argmax(1) > 0).all()
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)
