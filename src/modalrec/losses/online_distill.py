"""Online distillation between the branches of a late-fusion model (ODMT paper §3.5, Eq. 9-10).

Two loss forms are exposed because the paper and its released code differ (paper-notes §4.2 O1):

- ``soft_ce`` (default, the released code): ``T² · mean_rows[-Σ softmax(z_T/T) · log_softmax(z_S/T)]`` with the teacher
  **not detached**, so the distillation gradient also flows into the teacher's logits (mutual learning).
- ``kl`` (the paper's text): ``T² · mean_rows KL(softmax(z_T/T) ‖ softmax(z_S/T))``; combine with
  ``detach_teacher=True`` for classic one-way distillation.

Pairs (student ← teacher): text ← ID, image ← ID, ID ← ensemble ``(z_id + z_text + z_image)/3``.
The weight follows the released ramp-up ``w = exp(-5 (1 - min(epoch, α)/α)²)`` with 1-based epochs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KD_FORMS = ("soft_ce", "kl")


def rampup_weight(epoch: int, alpha: float) -> float:
    """Distillation weight at the 1-based ``epoch``.

    ``exp(-5 (1 - clip(epoch, 0, α)/α)²)``: ≈0.0110 at epoch 1 for α=20 (not 0), 1.0 from epoch α on.
    As in the released code, α < 1 means a constant weight α (so α=0 switches distillation off).
    """
    if alpha < 1:
        return float(alpha)
    phase = 1.0 - min(max(float(epoch), 0.0), float(alpha)) / float(alpha)
    return float(math.exp(-5.0 * phase * phase))


def distill_loss(student: Tensor, teacher: Tensor, T: float, form: str = "soft_ce",
                 detach_teacher: bool = False) -> Tensor:
    """``T²``-scaled distillation of ``student [Q, C]`` towards ``teacher [Q, C]`` logits, averaged over rows.

    Logits must be finite (masked columns as a large negative number, see ``losses.inbatch.MASK_VALUE``).
    """
    if form not in KD_FORMS:
        raise ValueError(f"unknown distillation form {form!r}; known: {KD_FORMS}")
    if T <= 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    if detach_teacher:
        teacher = teacher.detach()
    log_p_s = F.log_softmax(student.float() / T, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / T, dim=-1)
    if form == "soft_ce":
        per_row = -(log_p_t.exp() * log_p_s).sum(dim=-1)
    else:
        per_row = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)
    return (T * T) * per_row.mean()


def online_distillation(logits: dict[str, Tensor], T: float, form: str = "soft_ce",
                        detach_teacher: bool = False) -> dict[str, Tensor]:
    """The per-pair distillation terms for a dict of branch logits.

    With an ``id`` branch: ``{"text": L(text←id), "image": L(image←id), "id": L(id←ensemble)}`` (Eq. 9).
    Without one (the "w/o ID" ablation) every branch learns from the ensemble of the remaining branches.
    Returns one term per student branch; the caller sums them and applies the ramp-up weight.
    """
    ensemble = torch.stack([z.float() for z in logits.values()]).mean(dim=0)
    out: dict[str, Tensor] = {}
    for name, z in logits.items():
        if "id" in logits:
            teacher = ensemble if name == "id" else logits["id"]
        else:
            teacher = ensemble
        out[name] = distill_loss(z, teacher, T, form, detach_teacher)
    return out
