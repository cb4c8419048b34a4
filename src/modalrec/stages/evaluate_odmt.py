"""Stage `evaluate_odmt`: the engine's evaluate stage on an ODMT-family model, its entry resolved exactly as for
training (see :mod:`modalrec.stages.train_odmt`), so the rebuilt model matches the checkpoint."""

from __future__ import annotations

from typing import Any

from .train_odmt import resolve


def run(params: dict[str, Any], model: str, seed: int | None = None, **overrides: Any) -> Any:
    from . import evaluate as engine_evaluate

    return engine_evaluate.run(resolve(params, model, overrides.get("dataset")), model=model, seed=seed, **overrides)
