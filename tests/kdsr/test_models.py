"""KDSR wrapper and the graph backbones: contract, graph construction, prefix instances, no target leakage."""

import numpy as np
import pytest
import torch

from modalrec.errors import ParamError
from modalrec.models import Batch, ModelContext, build_model
from modalrec.models._session_graph import prefix_instances, sample_targets, session_graph

from .helpers import random_teacher

N = 30


def ctx(teacher=True, dim=16):
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.rand(N + 1, dim, generator=g) for m in ("image", "text")}
    for c in comp.values():
        c[0] = 0
    return ModelContext(n_items=N, max_len=8, compressed=comp, teacher=random_teacher(N, 6) if teacher else None)


def batch():
    ids = torch.tensor([[0, 0, 3, 1, 3, 7], [2, 5, 2, 9, 8, 4], [0, 0, 0, 0, 11, 6]])
    tgt = torch.tensor([[0, 0, 1, 3, 7, 5], [5, 2, 9, 8, 4, 12], [0, 0, 0, 0, 6, 1]])
    return Batch(ids, tgt, torch.arange(3))


def test_session_graph_relations():
    nodes, alias, rel = session_graph(torch.tensor([[0, 3, 1, 3, 7]]))
    assert nodes.tolist() == [[1, 3, 7]]
    assert nodes[0, alias[0, 1:]].tolist() == [3, 1, 3, 7]
    # 3->1, 1->3 (both ways), 3->7 (out of 3, into 7); self-loops on the diagonal
    assert rel[0].tolist() == [[1, 4, 0], [4, 1, 2], [0, 3, 1]]


def test_prefix_instances_are_the_released_training_instances():
    ids, tgt = prefix_instances(torch.tensor([[0, 0, 4, 5, 6]]), torch.tensor([[0, 0, 5, 6, 9]]))
    assert ids.tolist() == [[0, 0, 4], [0, 4, 5], [4, 5, 6]]
    assert tgt.tolist() == [5, 6, 9]


def test_sample_targets_keeps_k_targets_of_each_window():
    tgt = torch.tensor([[0, 0, 1, 3, 7, 5], [5, 2, 9, 8, 4, 12], [0, 0, 0, 0, 6, 1]])
    torch.manual_seed(0)
    kept = sample_targets(tgt, 3)
    assert (kept > 0).sum(1).tolist() == [3, 3, 2]  # k of each window; a window with fewer keeps all
    assert ((kept == tgt) | (kept == 0)).all() and (kept[2] == tgt[2]).all()
    assert sample_targets(tgt, 6).equal(tgt) and sample_targets(tgt, 100).equal(tgt)
    # uniform over a window's targets: each of the 6 positions of window 1 kept in about half of 4,000 draws
    freq = torch.stack([sample_targets(tgt, 3)[1] > 0 for _ in range(4000)]).float().mean(0)
    assert torch.allclose(freq, torch.full((6,), 0.5), atol=0.03)


@pytest.mark.parametrize("arch", ["mmsr", "kdsr_graph", "mmsr_released"])
def test_graph_backbones_train_on_a_sample_of_prefixes(arch):
    """prefixes: k gives the loss over k prefixes a window (here those sample_targets keeps under the same seed);
    null keeps every prefix; anything but a positive integer is refused by name."""
    torch.manual_seed(1)
    model = build_model(arch, {"dim": 16, "prefixes": 2}, ctx(teacher=False)).eval()  # no dropout: same forward
    b = batch()
    torch.manual_seed(5)
    loss = model.loss(b)
    torch.manual_seed(5)
    kept = Batch(b.input_ids, sample_targets(b.targets, 2), b.users)
    model.cfg.prefixes = None
    assert loss.item() == pytest.approx(model.loss(kept).item(), rel=1e-6)
    assert model.loss(kept).item() != pytest.approx(model.loss(b).item(), rel=1e-3)
    for bad in (0, 2.5, True):
        with pytest.raises(ParamError, match=f"models.{arch}.prefixes"):
            build_model(arch, {"dim": 16, "prefixes": bad}, ctx(teacher=False))


@pytest.mark.parametrize("backbone,cfg", [
    ("sasrec", {"dim": 16, "layers": 1}), ("gru4rec", {"dim": 16, "hidden": 16}),
    ("mmsr", {"dim": 16}), ("kdsr_graph", {"dim": 16}),
])
def test_kdsr_on_every_backbone(backbone, cfg):
    torch.manual_seed(0)
    model = build_model("kdsr", {"backbone": backbone, "backbone_cfg": cfg, "weights": {"image": [1, 0.5], "text": [0.5, 2]}},
                        ctx())
    out = model.loss(batch())
    assert set(out) >= {"loss", "rec", "cdl/image_holistic", "cdl/image_code", "cdl/text_holistic", "cdl/text_code"}
    expect = out["rec"] + out["cdl/image_holistic"] + 0.5 * out["cdl/image_code"] + 0.5 * out["cdl/text_holistic"] \
        + 2 * out["cdl/text_code"]
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-5)
    out["loss"].backward()
    assert model.modality_tables()["image"].weight.grad.abs().sum() > 0
    s = model.score_all(batch().input_ids)
    assert s.shape == (3, N + 1) and torch.isinf(s[:, 0]).all()
    names = [g["name"] for g in model.param_groups(1e-3)]
    assert "modality_tables" in names and "cdl" in names
    n_params = sum(p.numel() for g in model.param_groups(1e-3) for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters())  # every parameter in exactly one group
    assert sorted(model.required_inputs(model.cfg)) == ["compressed/image", "compressed/text", "teacher"]


@pytest.mark.parametrize("arch", ["mmsr", "kdsr_graph"])
def test_graph_backbones_do_not_see_the_future(arch):
    """The score of a history must not depend on what follows it (each prefix is its own graph)."""
    torch.manual_seed(0)
    model = build_model(arch, {"dim": 16}, ctx(teacher=False)).eval()
    a = model.score_all(torch.tensor([[0, 3, 1, 3]]))
    b = model.score_all(torch.tensor([[0, 0, 0, 3, 1, 3]]))  # padding amount does not matter either
    assert torch.allclose(a, b, atol=1e-5)
    # loss on a batch equals the mean over its prefixes scored one by one
    bt = Batch(torch.tensor([[0, 2, 4, 5]]), torch.tensor([[0, 4, 5, 6]]), torch.zeros(1, dtype=torch.long))
    ref = torch.stack([torch.log_softmax(model.score_all(p[None]), -1)[0, t]
                       for p, t in [(torch.tensor([2]), 4), (torch.tensor([2, 4]), 5), (torch.tensor([2, 4, 5]), 6)]])
    assert model.loss(bt).item() == pytest.approx(-ref.mean().item(), rel=1e-5)


@pytest.mark.parametrize("backbone", ["sasrec", "mmsr", "kdsr_graph"])
def test_kdsr_on_one_modality_needs_only_its_inputs(backbone):
    """A text-only dataset (Amazon Office): KDSR's modalities reach every backbone, so no image input is read."""
    from modalrec.models.kdsr import KDSR

    c = ctx()
    del c.compressed["image"]
    torch.manual_seed(0)
    model = build_model("kdsr", {"backbone": backbone, "backbone_cfg": {"dim": 16}, "modalities": ["text"],
                                 "weights": {"text": [1.0, 0.5]}}, c)
    assert sorted(KDSR.required_inputs(model.cfg)) == ["compressed/text", "teacher"]
    assert set(model.modality_tables()) == {"text"}
    out = model.loss(batch())
    assert "cdl/text_holistic" in out and not any("image" in k for k in out)
    out["loss"].backward()
    assert model.modality_tables()["text"].weight.grad.abs().sum() > 0


def test_kdsr_without_any_weight_is_the_backbone_and_needs_no_teacher():
    model = build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"dim": 16}, "weights": {"image": [0, 0], "text": [0, 0]}},
                        ctx(teacher=False))
    assert model.cdl is None and "teacher" not in model.required_inputs(model.cfg)
    out = model.loss(batch())
    assert out["loss"].item() == pytest.approx(out["rec"].item())


def test_bad_options_name_the_key():
    with pytest.raises(ParamError, match="backbone"):
        build_model("kdsr", {"backbone": "bert4rec"}, ctx())
    with pytest.raises(ParamError, match="item_repr"):
        build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"item_repr": "frozen"}}, ctx())
    with pytest.raises(ParamError, match="teacher"):
        build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"dim": 16}}, ctx(teacher=False))
    with pytest.raises(ParamError, match="dim"):
        build_model("kdsr_graph", {"dim": 32}, ctx())


def test_kdsr_gradients_are_bit_reproducible_on_cpu():
    """CDL's batched path (sparse table gradients, scatter/index adds, the hand-written backwards) gives the same
    gradients bit for bit, call after call, under the trainer's deterministic CPU kernels with 2 threads."""
    from modalrec.train.trainer import deterministic_on_cpu

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = build_model("kdsr", {"backbone": "sasrec", "backbone_cfg": {"dim": 16, "layers": 1}}, ctx())
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, N + 1, (16, 8), generator=g)
        b = Batch(ids, torch.randint(1, N + 1, (16, 8), generator=g), torch.arange(16))
        grads = []
        with deterministic_on_cpu(torch.device("cpu")):
            for _ in range(3):
                torch.manual_seed(2)  # the same dropout masks
                model.zero_grad(set_to_none=True)
                model.loss(b)["loss"].backward()
                grads.append([p.grad.to_dense().clone() for p in model.parameters() if p.grad is not None])
        for other in grads[1:]:
            assert all(torch.equal(a, c) for a, c in zip(grads[0], other))
    finally:
        torch.set_num_threads(n)
