"""KDSR's asynchronous training (§3.3): the trainable modality tables learn slower than the rest at first, so the
recommendation loss does not wash the encoder's knowledge out of them in the first epochs.

Modes (applied to the optimizer group ``modality_tables`` only; every other group keeps ε):

- ``linear`` (the paper): the tables' LR rises linearly from ``start``·ε at epoch 1 to ε at epoch η (``epochs``),
  then stays at ε. η is not reported; 10 is inferred from the code's unused ``schedule: [5, 10]``.
- ``constant`` (released code with ``use_AT: True``): ``factor``·ε for the whole run; the code's
  ``lr / gamma**len(schedule)`` = ε/4.
- ``none``: no asynchronous training (Table 3's "w/o AT").

The trainer multiplies each group's base LR by ``schedule(epoch, group_name)`` at every epoch start.
"""

from __future__ import annotations

from ..errors import ParamError
from .schedules import LRSchedule, constant, linear_warmup

MODES = ("linear", "constant", "none")
GROUP = "modality_tables"


def async_schedule(mode: str = "linear", start: float = 0.1, epochs: int = 10, factor: float = 0.25,
                   key: str = "models.<name>") -> LRSchedule | None:
    """The LR multiplier schedule of the modality tables, or None for ``none``."""
    if mode not in MODES:
        raise ParamError(f"{key}.async_lr", f"must be one of {MODES}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "constant":
        if not 0 < factor <= 1:
            raise ParamError(f"{key}.async_factor", f"must be in (0, 1], got {factor}")
        return constant(float(factor), [GROUP])
    if not 0 < start <= 1:
        raise ParamError(f"{key}.async_start", f"must be in (0, 1], got {start}")
    if int(epochs) < 1:
        raise ParamError(f"{key}.async_epochs", f"must be >= 1, got {epochs}")
    return linear_warmup(float(start), int(epochs), [GROUP])
