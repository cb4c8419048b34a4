"""The graph backbones' flat computation (:class:`SessionGraphs`: real nodes and edges only) trains like the padded
``[B, U, U]`` layout it replaced, kept as the reference in ``graph_reference.py``: same seed -> the same dropout
masks, the same losses and the same parameters after several Adam steps, for ``mmsr``, ``kdsr_graph`` and ``kdsr``
on both (the pipeline's ``kdsr_mmsr`` and ``kdsr_graph_cdl``), and the same scores.

The two differ only in the order of some float sums: the attention over a node's neighbours is a sum over its
edges instead of a product over all U columns (the non-neighbours had weight exactly 0); MMSR's input projection
``W_pt [x; type; pos]`` is ``W_x x + W_t type + W_p pos`` with the x part computed once per item of the batch; the
gradients of shared weights are summed over the real nodes (and items) instead of over the padded layout, whose
padding rows contributed exact zeros. So they agree to float rounding, not bitwise. The strict comparisons run in
float64, where that rounding is ~1e-16, and must agree to 1e-9; the float32 test bounds what it amounts to in the
trainer's dtype.
"""

from __future__ import annotations

import pytest
import torch

from modalrec.models import Batch, ModelContext, build_model
from modalrec.models._session_graph import session_graph, session_graphs
from modalrec.train.trainer import deterministic_on_cpu

from .graph_reference import use_reference
from .helpers import random_teacher

N, DIM, MAX_LEN = 30, 16, 12


def context():
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.rand(N + 1, DIM, generator=g, dtype=torch.float64) for m in ("image", "text")}
    for c in comp.values():
        c[0] = 0
    return ModelContext(n_items=N, max_len=MAX_LEN, compressed=comp, teacher=random_teacher(N, 6))


def batches(n=4, B=7, L=10, seed=1):
    """Left-padded windows of 2..L+1 items over a small catalogue, so items repeat (both-way edges, repeated
    nodes) and the prefixes differ in size."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        rows = torch.zeros(B, L + 1, dtype=torch.long)
        for b in range(B):
            k = int(torch.randint(2, L + 2, (1,), generator=g))
            rows[b, L + 1 - k:] = torch.randint(1, 9 if b % 2 else N + 1, (k,), generator=g)
        inp, tgt = rows[:, :-1], rows[:, 1:]
        out.append(Batch(inp, torch.where(inp > 0, tgt, 0), torch.arange(B)))
    return out


NULL_GRADIENT = ("W2.bias", "gate.2.bias", "hete.k.bias")  # softmax-shift biases: see the float32 test

CASES = {
    "mmsr": ("mmsr", {"dim": DIM, "layers": 2, "q": 3}),
    "kdsr_graph": ("kdsr_graph", {"dim": DIM, "last_n": 2}),
    "kdsr_mmsr": ("kdsr", {"backbone": "mmsr", "backbone_cfg": {"dim": DIM, "q": 3}}),
    "kdsr_graph_cdl": ("kdsr", {"backbone": "kdsr_graph", "backbone_cfg": {"dim": DIM}}),
}


def build(case, reference):
    arch, cfg = CASES[case]
    torch.manual_seed(0)
    model = build_model(arch, cfg, context()).double()
    if reference:
        use_reference(model, cfg.get("backbone", arch))
    return model


def train(model, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for s, b in enumerate(steps):
        torch.manual_seed(100 + s)  # the dropout masks of this step
        out = model.loss(b)
        loss = out["loss"] if isinstance(out, dict) else out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("case", list(CASES))
def test_training_equals_the_padded_reference(case):
    steps = batches() * 2
    fast, ref = build(case, False), build(case, True)
    lf, lr = train(fast, steps), train(ref, steps)
    assert torch.allclose(lf, lr, rtol=1e-9, atol=0), (lf - lr).abs().max()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12), f"{name}: {(p - q).abs().max():.3g}"
    # scoring (eval mode, no dropout): padded histories longer than max_len, a length-1 history
    fast.eval(), ref.eval()
    ids = torch.cat([steps[0].input_ids, torch.tensor([[0] * 9 + [5]])])
    ids = torch.cat([torch.randint(1, N + 1, (ids.shape[0], 4)), ids], 1)
    assert torch.allclose(fast.score_all(ids), ref.score_all(ids), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_training_agrees_to_rounding(case):
    """The same in float32, the trainer's dtype: the representations of one training forward differ by float32
    rounding only (another seed's masks change them by far more), the losses of a few steps by < 1e-5 relative and
    the parameters by < 1e-4 (Adam divides each gradient by its running norm, so rounding in small gradients
    moves a parameter by up to ~lr·1e-3). The biases in NULL_GRADIENT have a gradient that is 0 in exact
    arithmetic (each shifts all the logits of a softmax alike), so their Adam steps are rounding noise in both
    implementations, as large as lr, and change no output: they are not compared."""
    arch, cfg = CASES[case]
    ctx = context()
    ctx.compressed = {m: c.float() for m, c in ctx.compressed.items()}
    steps = batches(3, B=16) * 2
    models, reps = [], []
    for reference in (False, True):
        torch.manual_seed(0)
        model = build_model(arch, cfg, ctx).train()
        models.append(use_reference(model, cfg.get("backbone", arch)) if reference else model)
        bb = model.backbone if hasattr(model, "backbone") else model
        torch.manual_seed(7)
        reps.append(bb.user_vectors(steps[0].input_ids))
    assert (reps[0] - reps[1]).abs().max() < 1e-5
    torch.manual_seed(8)
    assert (bb.user_vectors(steps[0].input_ids) - reps[1]).abs().max() > 1e-2
    with deterministic_on_cpu(torch.device("cpu")):  # the trainer's CPU kernels
        lf, lr = train(models[0], steps), train(models[1], steps)
    assert torch.allclose(lf, lr, rtol=1e-5), (lf - lr).abs().max()
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        if not name.endswith(NULL_GRADIENT):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-4), f"{name}: {(p - q).abs().max():.3g}"


def test_session_graphs_are_the_padded_graphs():
    ids = torch.tensor([[0, 3, 1, 3, 7], [0, 0, 0, 0, 2], [5, 5, 6, 5, 6]])
    g = session_graphs(ids)
    nodes, alias, rel = session_graph(ids)
    B, U = nodes.shape
    assert g.items.tolist() == [1, 3, 7, 2, 5, 6]
    assert torch.equal(nodes.flatten()[g.slot], g.items)
    assert g.items[g.alias[ids > 0]].tolist() == ids[ids > 0].tolist()
    assert (g.alias[ids == 0] == -1).all()
    dense = torch.zeros(B * U, B * U, dtype=torch.long)  # rebuild [B, U, U] from the edge list
    dense[g.slot[g.src], g.slot[g.dst]] = g.rel
    assert torch.equal(torch.stack([dense[b * U:(b + 1) * U, b * U:(b + 1) * U] for b in range(B)]), rel)
    assert torch.equal(rel.flatten()[g.edge], g.rel)
    assert torch.equal(g.src * len(g.items) + g.dst, (g.src * len(g.items) + g.dst).sort().values)
    # no items at all: no nodes, the positions read zeros, and the models still score (finite, like before)
    e = session_graphs(torch.zeros(2, 3, dtype=torch.long))
    assert e.items.numel() == 0 and e.per_position(torch.zeros(0, 4)).shape == (2, 3, 4)
    for case in ("mmsr", "kdsr_graph"):
        s = build(case, False).eval().score_all(torch.tensor([[0, 0, 0], [0, 4, 2]]))
        assert torch.isfinite(s[:, 1:]).all()


@pytest.mark.parametrize("case", ["mmsr", "kdsr_graph"])
def test_mixed_precision(case):
    """Under autocast (the trainer's CUDA amp; CPU bf16 here) the layers mix bf16 products with float32 softmax
    weights: the model trains, and its loss stays within bf16 rounding of the padded reference's."""
    losses = []
    for reference in (False, True):
        model = build(case, reference).float().train()
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss(batches(1)[0])
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-2)
