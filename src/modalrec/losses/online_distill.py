"""Online distillation between the branches of a late-fusion model (ODMT paper §3.5, Eq. 9-10).

Two loss forms are exposed because the paper and its released code differ (paper-notes §4.2 O1):

- ``soft_ce`` (default, the released code): ``T² · mean_rows[-Σ softmax(z_T/T) · log_softmax(z_S/T)]`` with the teacher
  **not detached**, so the distillation gradient also flows into the teacher's logits (mutual learning).
- ``kl`` (the paper's text): ``T² · mean_rows KL(softmax(z_T/T) ‖ softmax(z_S/T))``; combine with
  ``detach_teacher=True`` for classic one-way distillation.

Pairs (student ← teacher): text ← ID, image ← ID, ID ← ensemble ``(z_id + z_text + z_image)/3``.
The weight follows the released ramp-up ``w = exp(-5 (1 - min(epoch, α)/α)²)`` with 1-based epochs, optionally
capped at a maximum below 1 (``max_weight``) and with α set from the epoch cap
(``ODMT.Config.ramp_fraction``, folded in by ``modalrec.runs.resolve_run``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KD_FORMS = ("soft_ce", "kl")


def rampup_weight(epoch: int, alpha: float, max_weight: float = 1.0) -> float:
    """Distillation weight at the 1-based ``epoch``.

    ``max_weight · exp(-5 (1 - clip(epoch, 0, α)/α)²)``: ≈0.0110 · max_weight at epoch 1 for α=20 (not 0),
    ``max_weight`` from epoch α on. As in the released code, α < 1 means a constant weight α (so α=0 switches
    distillation off), also scaled by ``max_weight``. The released code has ``max_weight`` 1.
    """
    if alpha < 1:
        return float(alpha) * float(max_weight)
    phase = 1.0 - min(max(float(epoch), 0.0), float(alpha)) / float(alpha)
    return float(max_weight) * float(math.exp(-5.0 * phase * phase))


def _check(T: float, form: str) -> None:
    if form not in KD_FORMS:
        raise ValueError(f"unknown distillation form {form!r}; known: {KD_FORMS}")
    if T <= 0:
        raise ValueError(f"temperature must be > 0, got {T}")


def _teacher_probs(log_p_t: Tensor, mask: Tensor | None) -> Tensor:
    """``exp(log_p_t)``; at the ``mask``ed columns (masked in the teacher's logits, see ``losses.inbatch``) exactly 0,
    without evaluating ``exp`` there: what ``exp`` gives for them (their log-probabilities are about -1e4/T, which
    underflows), but such arguments take a slow path on CPU (4x the time of ordinary ones)."""
    if mask is None:
        return log_p_t.exp()
    return torch.exp(log_p_t.masked_fill(mask, 0.0)).masked_fill(mask, 0.0)


def _log_probs(z: Tensor, T: float, log_count: Tensor | None) -> Tensor:
    """``log_softmax(z / T)`` over the columns; with ``log_count`` (``losses.inbatch``: a column standing for n
    occurrences of one logit) the log-probability of the column's n occurrences together."""
    z = z.float() / T
    return F.log_softmax(z if log_count is None else z + log_count, dim=-1)


def _pair(log_p_s: Tensor, log_p_t: Tensor, p_t: Tensor, T: float, form: str, log_count: Tensor | None) -> Tensor:
    """The released code's per-occurrence terms summed by column: ``-Σ p_t log p_s`` with ``log p_s`` of one
    occurrence (``log_p_s - log_count``), or ``Σ p_t (log p_t - log p_s)``, where ``log n`` cancels."""
    if form == "soft_ce":
        per_row = -(p_t * (log_p_s if log_count is None else log_p_s - log_count)).sum(dim=-1)
    else:  # F.kl_div(log_p_s, log_p_t, log_target=True): exp(log_p_t) · (log_p_t - log_p_s)
        per_row = (p_t * (log_p_t - log_p_s)).sum(dim=-1)
    return (T * T) * per_row.mean()


def distill_loss(student: Tensor, teacher: Tensor, T: float, form: str = "soft_ce",
                 detach_teacher: bool = False, mask: Tensor | None = None,
                 log_count: Tensor | None = None) -> Tensor:
    """``T²``-scaled distillation of ``student [Q, C]`` towards ``teacher [Q, C]`` logits, averaged over rows.

    Logits must be finite (masked columns as a large negative number, see ``losses.inbatch.MASK_VALUE``); ``mask``
    (optional, ``[Q, C]``) marks the teacher's masked columns, whose probabilities are then set to 0 directly;
    ``log_count`` (optional) the in-batch candidates' occurrence counts (``InBatchCandidates.log_count``).
    """
    _check(T, form)
    if detach_teacher:
        teacher = teacher.detach()
    log_p_t = _log_probs(teacher, T, log_count)
    return _pair(_log_probs(student, T, log_count), log_p_t, _teacher_probs(log_p_t, mask), T, form, log_count)


def online_distillation(logits: dict[str, Tensor], T: float, form: str = "soft_ce", detach_teacher: bool = False,
                        mask: Tensor | None = None, log_count: Tensor | None = None) -> dict[str, Tensor]:
    """The per-pair distillation terms for a dict of branch logits.

    With an ``id`` branch: ``{"text": L(text←id), "image": L(image←id), "id": L(id←ensemble)}`` (Eq. 9).
    Without one (the "w/o ID" ablation) every branch learns from the ensemble of the remaining branches.
    Returns one term per student branch; the caller sums them and applies the ramp-up weight.

    Each branch's log-probabilities serve it as student and as teacher, and each teacher's probabilities are
    computed once (:func:`distill_loss` per pair gives the same values). ``mask``: the columns masked in every
    branch (the in-batch candidate mask), ``log_count``: the candidates' counts, see :func:`distill_loss`.
    """
    _check(T, form)
    ensemble = torch.stack([z.float() for z in logits.values()]).mean(dim=0)
    log_p = {name: _log_probs(z, T, log_count) for name, z in logits.items()}
    teachers: dict[str, tuple[Tensor, Tensor]] = {}

    def teacher(name: str) -> tuple[Tensor, Tensor]:
        if name not in teachers:
            lp = _log_probs(ensemble, T, log_count) if name == "ensemble" else log_p[name]
            lp = lp.detach() if detach_teacher else lp
            teachers[name] = (lp, _teacher_probs(lp, mask))
        return teachers[name]

    out: dict[str, Tensor] = {}
    for name in logits:
        t = "ensemble" if name == "id" or "id" not in logits else "id"
        out[name] = _pair(log_p[name], *teacher(t), T, form, log_count)
    return out
