"""Checkpoints: atomic writes, real copies of the weights, and the RNG states that make resume exact."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_path


def save(path: str | Path, obj: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file: a crash mid-write never leaves a truncated checkpoint."""
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found (train this model first)", path=path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"cannot read checkpoint: {e}", path=path) from None


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU **copy** of a state dict (``state_dict()`` alone returns references that keep changing: the
    bug that made KDSR's 'best' model the last one)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
