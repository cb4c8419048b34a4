"""MMSRec's modality fusion against a hand computation, and its masked-slot scoring."""

import torch
import torch.nn.functional as F

from modalrec.models import ModelContext, build_model


def ctx():
    g = torch.Generator().manual_seed(0)
    feats = {"image": torch.randn(7, 5, generator=g), "text": torch.randn(7, 3, generator=g)}
    feats["image"][2] = 0  # item 2 has no image
    feats["image"][3], feats["text"][3] = 0, 0  # item 3 has nothing
    for f in feats.values():
        f[0] = 0
    return ModelContext(6, 4, features=feats)


def test_item_vector_by_hand_without_layers():
    """With no Transformer layer an item's vector is the max over its present modalities of
    out_m(LN(in_m(x_m) + pos + type_m))."""
    torch.manual_seed(0)
    model = build_model("mmsrec", {"dim": 4, "layers": 0}, ctx()).eval()
    with torch.no_grad():
        for p in (model.pos.weight, model.modal_type.weight, model.mask_token):
            p.normal_()
        c = model.candidates()
        pos = model.pos.weight[-1]  # a candidate sits at the newest slot
        for item, mods in ((1, [0, 1]), (2, [1]), (3, [0])):
            vs = []
            for i, m in enumerate(model.modalities):
                if i in mods:
                    tok = model.inp[m](getattr(model, f"feat_{m}")[item])
                    vs.append(model.out[m](model.ln(tok + pos + model.modal_type.weight[i])))
            want = torch.stack(vs).max(0).values
            torch.testing.assert_close(c[item], F.normalize(want, dim=-1))
        assert torch.all(c[0] == 0)
        # item 3 has no feature at all: its (zero) first-modality token stands in
        torch.testing.assert_close(model.feat_image[3], torch.zeros(5))


def test_scores_are_the_mask_slot_against_the_candidates():
    torch.manual_seed(0)
    model = build_model("mmsrec", {"dim": 4, "heads": 1}, ctx()).eval()
    with torch.no_grad():
        hist = torch.tensor([[0, 1, 2]])
        s = model.score_all(hist)
        h = model.encode(torch.tensor([[0, 1, 2, model.MASK]]))[0, -1]
        torch.testing.assert_close(s[0, 1:], F.normalize(h, dim=-1) @ model.candidates()[1:].t())
        # bidirectional fusion: the first item's vector sees the later ones
        a = model.encode(torch.tensor([[1, 2, 4]]))[0, 0]
        b = model.encode(torch.tensor([[1, 2, 5]]))[0, 0]
        assert not torch.allclose(a, b)
    assert not any(k.startswith("feat_") for k in model.state_dict())  # frozen features stay out of checkpoints
