"""Online distillation: ramp-up values, the two loss forms, teacher detaching and the pairs."""

import math

import pytest
import torch

from modalrec.losses.online_distill import distill_loss, online_distillation, rampup_weight


@pytest.mark.parametrize("epoch,alpha,expected", [
    (1, 20, math.exp(-5 * (19 / 20) ** 2)),  # ≈ 0.0110: 1-based epochs, never exactly 0
    (10, 20, math.exp(-5 * 0.25)),
    (20, 20, 1.0),
    (31, 20, 1.0),
    (30, 60, math.exp(-5 * 0.25)),  # H&M: alpha beyond the run, w tops out at ~0.29
    (5, 0.5, 0.5),  # alpha < 1: constant weight
    (5, 0, 0.0),
])
def test_rampup_values(epoch, alpha, expected):
    assert rampup_weight(epoch, alpha) == pytest.approx(expected, rel=1e-12)


def test_rampup_is_monotone_up_to_alpha():
    w = [rampup_weight(e, 40) for e in range(1, 45)]
    assert all(a < b for a, b in zip(w[:39], w[1:40])) and w[39:] == [1.0] * 5


def test_soft_ce_is_kl_plus_teacher_entropy():
    torch.manual_seed(0)
    s, t, T = torch.randn(5, 7), torch.randn(5, 7), 0.4
    p_t = torch.softmax(t / T, -1)
    entropy = -(p_t * torch.log(p_t)).sum(-1).mean()
    kl = distill_loss(s, t, T, "kl")
    ce = distill_loss(s, t, T, "soft_ce")
    assert ce.item() == pytest.approx((kl + T * T * entropy).item(), rel=1e-5)
    assert distill_loss(t, t, T, "kl").item() == pytest.approx(0.0, abs=1e-6)


def test_masked_columns_give_finite_losses():
    s = torch.tensor([[1.0, -1e4, 2.0]])
    t = torch.tensor([[0.5, -1e4, -1e4]])
    for form in ("soft_ce", "kl"):
        assert torch.isfinite(distill_loss(s, t, 0.3, form))


@pytest.mark.parametrize("detach", [False, True])
def test_teacher_gradient_follows_detach_flag(detach):
    torch.manual_seed(1)
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 6, requires_grad=True)
    distill_loss(s, t, 0.5, "soft_ce", detach_teacher=detach).backward()
    assert s.grad.abs().sum() > 0
    assert (t.grad is None or t.grad.abs().sum() == 0) == detach


def test_pairs_text_and_image_learn_from_id_and_id_from_the_ensemble():
    torch.manual_seed(2)
    z = {"text": torch.randn(4, 9), "image": torch.randn(4, 9), "id": torch.randn(4, 9)}
    out = online_distillation(z, 0.3)
    ens = (z["text"] + z["image"] + z["id"]) / 3
    assert out["text"] == pytest.approx(distill_loss(z["text"], z["id"], 0.3).item())
    assert out["image"] == pytest.approx(distill_loss(z["image"], z["id"], 0.3).item())
    assert out["id"] == pytest.approx(distill_loss(z["id"], ens, 0.3).item())
    no_id = online_distillation({"text": z["text"], "image": z["image"]}, 0.3)
    ens2 = (z["text"] + z["image"]) / 2
    assert no_id["text"] == pytest.approx(distill_loss(z["text"], ens2, 0.3).item())
