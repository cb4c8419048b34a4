"""KDSR's training hooks (the ``kdsr`` family of :mod:`modalrec.runs`): the asynchronous LR schedule of the modality
tables (the model's ``async_*`` options) and the per-epoch modality-forgetting probe (``kdsr.forgetting``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParamError
from ..models.kdsr import NEGLIGIBLE  # the family's model: its term-size threshold
from ..params import get
from ..runs import RunSpec, model_config


def training_hooks(spec: RunSpec, params: dict[str, Any], data_root: str | Path = "data"):
    """``(lr_schedule, epoch_callback)`` of a run: KDSR's asynchronous LR of the modality tables (``async_*``
    options) and :class:`TermSizes` (the modality-forgetting probe, ``kdsr.forgetting``, M = the compress stage's
    m̃, and the loss-term sizes)."""
    cfg = model_config(spec)
    schedule = None
    if spec.arch == "kdsr":
        wait_for_warm_up(spec, cfg)
        from .async_lr import async_schedule

        schedule = async_schedule(cfg.async_lr, cfg.async_start, cfg.async_epochs, cfg.async_factor,
                                  key=f"models.{spec.name}")
    fcfg = dict(get(params, "kdsr.forgetting", {}) or {})
    unknown = sorted(set(fcfg) - {"enabled", "pairs", "seed"})
    if unknown:
        raise ParamError(f"kdsr.forgetting.{unknown[0]}", "unknown key; known: enabled, pairs, seed")
    if not fcfg.get("enabled", True):
        return schedule, TermSizes(None)
    import numpy as np
    import torch

    from ..analysis.forgetting import ForgettingProbe
    from ..encode.cache import load_features

    ref = {}
    for m in getattr(cfg, "modalities", None) or []:
        x, _, _ = load_features(Path(data_root) / "compressed" / spec.dataset / f"{m}.parquet")
        ref[m] = torch.from_numpy(np.ascontiguousarray(x))
    probe = ForgettingProbe(ref, int(fcfg.get("pairs", 20000)), int(fcfg.get("seed", 0))) if ref else None
    return schedule, TermSizes(probe)


def wait_for_warm_up(spec: RunSpec, cfg: Any) -> None:
    """KDSR's modality tables warm up (``async_lr: linear``) over ``async_epochs``; early stopping must not end a run
    before the warmed-up tables had the same patience as any other model (issue 18: ``kdsr_sasrec`` was selected at
    epoch 7 of a 10-epoch warm-up with patience 5). So the run's ``min_epochs`` becomes at least
    ``async_epochs + patience``: patience counts from the end of the warm-up, and every model of a comparison keeps
    one ``patience`` (the rule before was ``patience >= async_epochs`` for every model, which cost the baselines and
    the KDSR runs alike 5 epochs of waiting)."""
    if cfg.async_lr == "linear" and int(cfg.async_epochs):
        spec.train.hold_until(int(cfg.async_epochs))


class TermSizes:
    """The family's epoch callback: the forgetting probe's values (when enabled) and every loss term's size
    (``terms/...``: :meth:`modalrec.models.kdsr.KDSR.term_sizes` on its fixed batch; models without CDL log none).
    A CDL term whose gradient on the tables is under 1% of the recommendation loss's is printed as a warning."""

    def __init__(self, probe: Any = None):
        self.probe = probe

    def __call__(self, epoch: int, model: Any, logs: dict[str, float]) -> dict[str, float]:
        out = dict(self.probe(epoch, model, logs) or {}) if self.probe is not None else {}
        sizes = getattr(model, "term_sizes", None)
        if sizes is not None:
            t = sizes()
            out.update(t)
            low = [k[len("terms/"):-len("_negligible")] for k, v in t.items() if k.endswith("_negligible") and v]
            for name in low:
                print(f"kdsr: epoch {epoch}: the gradient of {name} on the tables is "
                      f"{t[f'terms/{name}_grad_ratio']:.2%} of the recommendation loss's (under {NEGLIGIBLE:.0%})",
                      flush=True)
        return out
