"""SR-GNN's session graph and readout against hand computations (the example of the SR-GNN paper's Fig. 2 style)."""

import torch

from modalrec.models import ModelContext, build_model
from modalrec.models._session_graph import prefix_instances
from modalrec.models.srgnn import prefixes, session_graph


def test_session_graph_of_a_history_with_a_revisit():
    # history 5 -> 3 -> 5 -> 7, left-padded; nodes ascending: 3, 5, 7 (slots 0, 1, 2)
    nodes, alias, a_in, a_out = session_graph(torch.tensor([[0, 0, 5, 3, 5, 7], [0, 0, 0, 0, 2, 2]]))
    assert nodes.tolist() == [[3, 5, 7], [2, 0, 0]]
    assert alias[0, 2:].tolist() == [1, 0, 1, 2] and alias[1, 4:].tolist() == [0, 0]
    # edges 5->3, 3->5, 5->7. outgoing: 5 has two successors (3, 7), each 1/2; 3 has one (5); 7 none
    want_out = torch.tensor([[0, 1, 0], [0.5, 0, 0.5], [0, 0, 0]])
    # incoming: 3 <- 5, 5 <- 3, 7 <- 5, each node one predecessor
    want_in = torch.tensor([[0, 1.0, 0], [1, 0, 0], [0, 1, 0]])
    torch.testing.assert_close(a_out[0], want_out)
    torch.testing.assert_close(a_in[0], want_in)
    # a repeat 2 -> 2 is a self-loop; padding slots have no edges
    torch.testing.assert_close(a_in[1], torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(a_out[1], a_in[1])


def test_repeated_transition_counts_once():
    _, _, a_in, a_out = session_graph(torch.tensor([[1, 2, 1, 2, 3]]))
    # edges 1->2 (twice, weight 1), 2->1, 2->3: outdeg(2) = 2
    torch.testing.assert_close(a_out[0], torch.tensor([[0, 1.0, 0], [0.5, 0, 0.5], [0, 0, 0]]))
    torch.testing.assert_close(a_in[0], torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 1.0, 0]]))


def test_prefixes_match_the_graph_backbones():
    ids = torch.tensor([[0, 0, 4, 9, 2], [1, 2, 3, 4, 5]])
    tgt = torch.tensor([[0, 0, 9, 2, 6], [2, 0, 4, 5, 7]])
    a, b = prefixes(ids, tgt), prefix_instances(ids, tgt)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0][0].tolist() == [0, 0, 0, 0, 4] and a[0][-1].tolist() == [1, 2, 3, 4, 5] and a[1][0].item() == 9


def test_user_vector_by_hand():
    """One GNN step and the attention readout computed with explicit loops over nodes and positions."""
    torch.manual_seed(0)
    model = build_model("srgnn", {"dim": 4}, ModelContext(n_items=9, max_len=6)).eval()
    hist = [5, 3, 5, 7]
    E = model.item_emb.weight.detach()
    g = model.gnn
    items = [3, 5, 7]
    succ = {3: [5], 5: [3, 7], 7: []}
    pred = {3: [5], 5: [3], 7: [5]}
    h = {i: E[i] for i in items}
    new = {}
    for i in items:
        m_in = sum((g.edge_in(h[j]) for j in pred[i]), torch.zeros(4)) / max(len(pred[i]), 1) + g.b_iah
        m_out = sum((g.edge_out(h[j]) for j in succ[i]), torch.zeros(4)) / max(len(succ[i]), 1) + g.b_ioh
        a = torch.cat([m_in, m_out])
        gi, gh = g.w_ih @ a + g.b_ih, g.w_hh @ h[i] + g.b_hh
        r = torch.sigmoid(gi[:4] + gh[:4])
        z = torch.sigmoid(gi[4:8] + gh[4:8])
        n = torch.tanh(gi[8:] + r * gh[8:])
        new[i] = (1 - z) * h[i] + z * n
    s = [new[i] for i in hist]
    last = s[-1]
    alpha = [model.linear_three(torch.sigmoid(model.linear_one(last) + model.linear_two(x))) for x in s]
    glob = sum(a * x for a, x in zip(alpha, s))
    want = model.linear_transform(torch.cat([glob, last]))
    got = model.user_vectors(torch.tensor([[0, 0] + hist]))[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_chunked_loss_equals_one_pass(monkeypatch):
    """Training in length-sorted chunks gives the loss of one pass over every prefix."""
    import modalrec.models.srgnn as srgnn
    from modalrec.models.base import Batch

    torch.manual_seed(0)
    model = build_model("srgnn", {"dim": 8}, ModelContext(n_items=20, max_len=6))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 21, (5, 6), generator=g)
    ids[0, :3] = 0
    tgt = torch.randint(1, 21, (5, 6), generator=g)
    tgt[0, :3] = 0
    b = Batch(ids, tgt, torch.arange(5))
    monkeypatch.setattr(srgnn, "PREFIX_CHUNK", 4)
    chunked = model.loss(b)
    p_ids, p_tgt = prefixes(ids, tgt)
    logits = model.user_vectors(p_ids) @ model.item_emb.weight.t()
    logits[:, 0] = float("-inf")
    torch.testing.assert_close(chunked, torch.nn.functional.cross_entropy(logits, p_tgt))
