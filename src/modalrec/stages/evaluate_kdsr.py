"""Stage `evaluate_kdsr`: the engine's evaluate stage on a KDSR-family model, its entry resolved exactly as for
training (see :mod:`modalrec.stages.train_kdsr`), so the rebuilt model and the protocol (e.g. the parity preset's
``select_on: test_max``) match the run."""

from __future__ import annotations

from typing import Any

from .train_kdsr import resolve


def run(params: dict[str, Any], model: str, seed: int | None = None, **overrides: Any):
    from . import evaluate as engine_evaluate

    return engine_evaluate.run(resolve(params, model, overrides.get("dataset")), model=model, seed=seed, **overrides)
