"""How CDL asks a teacher: duck-typed, so the distill stage's :class:`modalrec.teacher.teacher.Teacher` and the
tests' stand-ins both work (``lookup`` when it has one, else ``holistic`` / ``codes``; ``holistic_block`` when it
has one, for the per-sequence block form of the Frobenius loss)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ...errors import ParamError


def teacher_lookup(teacher: Any, i: Tensor, j: Tensor, modality: str, holistic: bool,
                   codes: bool) -> tuple[Tensor | None, Tensor | None]:
    """The teacher's holistic correlations and/or codes of the pairs; one fused ``lookup`` (a single gather of both
    items' m̃) when both are needed and the teacher has it."""
    if holistic and codes and callable(getattr(teacher, "lookup", None)):
        return teacher.lookup(i, j, modality)
    return (teacher.holistic(i, j, modality) if holistic else None, teacher.codes(i, j, modality) if codes else None)


def teacher_attr(teacher: Any, name: str, default: Any) -> Any:
    return getattr(teacher, name, default)


def teacher_n_codes(teacher: Any, modality: str) -> int:
    """The number of codewords x the teacher assigns for ``modality``."""
    for name in ("n_codes", "codes_per_modality", "x"):
        v = getattr(teacher, name, None)
        if callable(v):
            v = v(modality)
        if isinstance(v, dict):
            v = v.get(modality)
        if v is not None:
            return int(v)
    raise ParamError("kdsr.codes", "the teacher does not say how many codewords it has")


def has_holistic_block(teacher: Any) -> bool:
    """Whether the teacher answers whole per-sequence blocks: ``holistic_block(items [..., U], m) -> [..., U, U]``."""
    return callable(getattr(teacher, "holistic_block", None))
