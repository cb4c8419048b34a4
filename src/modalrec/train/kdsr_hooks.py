"""KDSR's training hooks (the ``kdsr`` family of :mod:`modalrec.runs`): the asynchronous LR schedule of the modality
tables (the model's ``async_*`` options) and the per-epoch modality-forgetting probe (``kdsr.forgetting``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParamError
from ..params import get
from ..runs import RunSpec, model_config


def training_hooks(spec: RunSpec, params: dict[str, Any], data_root: str | Path = "data"):
    """``(lr_schedule, epoch_callback)`` of a run: KDSR's asynchronous LR of the modality tables (``async_*``
    options) and the modality-forgetting probe (``kdsr.forgetting``, M = the compress stage's m̃); None for the
    other families."""
    cfg = model_config(spec)
    schedule = None
    if spec.arch == "kdsr":
        from .async_lr import async_schedule

        schedule = async_schedule(cfg.async_lr, cfg.async_start, cfg.async_epochs, cfg.async_factor,
                                  key=f"models.{spec.name}")
    fcfg = dict(get(params, "kdsr.forgetting", {}) or {})
    unknown = sorted(set(fcfg) - {"enabled", "pairs", "seed"})
    if unknown:
        raise ParamError(f"kdsr.forgetting.{unknown[0]}", "unknown key; known: enabled, pairs, seed")
    if not fcfg.get("enabled", True):
        return schedule, None
    import numpy as np
    import torch

    from ..analysis.forgetting import ForgettingProbe
    from ..encode.cache import load_features

    ref = {}
    for m in getattr(cfg, "modalities", None) or []:
        x, _, _ = load_features(Path(data_root) / "compressed" / spec.dataset / f"{m}.parquet")
        ref[m] = torch.from_numpy(np.ascontiguousarray(x))
    probe = ForgettingProbe(ref, int(fcfg.get("pairs", 20000)), int(fcfg.get("seed", 0))) if ref else None
    return schedule, probe
