"""Per-parameter-group learning-rate multipliers, applied by the trainer at the start of every epoch.

A schedule is any callable ``(epoch: int, group_name: str) -> float`` (1-based epoch); the group's learning rate is
its base LR times the multiplier. Groups are named by :meth:`SeqRecModel.param_groups` (for backbones on
:class:`~modalrec.models.item_repr.ItemRepr`: ``id``, ``modality_tables``, ``modality_proj``, ``backbone``).
KDSR's asynchronous training is a schedule on ``modality_tables``.
"""

from __future__ import annotations

from typing import Callable, Iterable

LRSchedule = Callable[[int, str], float]


def constant(factor: float = 1.0, groups: Iterable[str] | None = None) -> LRSchedule:
    """``factor`` for the named groups (all groups when None), 1 for the others. KDSR code parity: 0.25."""
    names = None if groups is None else set(groups)

    def f(epoch: int, group: str) -> float:
        return factor if names is None or group in names else 1.0

    return f


def linear_warmup(start: float, epochs: int, groups: Iterable[str] | None = None) -> LRSchedule:
    """Rise linearly from ``start`` at epoch 1 to 1 at epoch ``epochs`` (then 1): KDSR paper's asynchronous
    training (0.1 -> 1 over eta epochs) when applied to ``modality_tables``."""
    names = None if groups is None else set(groups)

    def f(epoch: int, group: str) -> float:
        if names is not None and group not in names:
            return 1.0
        if epochs <= 1 or epoch >= epochs:
            return 1.0
        return start + (1.0 - start) * (max(epoch, 1) - 1) / (epochs - 1)

    return f


def step(step_size: int, gamma: float) -> LRSchedule:
    """StepLR by epochs for every group (KDSR/MMSR code: step 40, gamma 1e-4)."""

    def f(epoch: int, group: str) -> float:
        return gamma ** ((max(epoch, 1) - 1) // step_size)

    return f


def compose(*schedules: LRSchedule) -> LRSchedule:
    def f(epoch: int, group: str) -> float:
        out = 1.0
        for s in schedules:
            out *= s(epoch, group)
        return out

    return f
