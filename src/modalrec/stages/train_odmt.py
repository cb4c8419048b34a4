"""Stage `train_odmt`: train a model of the ODMT family (ODMT, its ablations, SASRec+EF, SASRec+LF).

It is the engine's ``modalrec.stages.train.run`` (``evaluate_odmt``: ``modalrec.stages.evaluate.run``) after one step: the ``odmt``
params section is folded into the model's entry, so ``dvc exp run -S odmt.T=0.3`` changes what ODMT trains with.

Precedence for a model's ``T``, ``alpha``, ``id_init`` and ``modalities`` (highest first):
``models.<name>.<key>`` (an explicit per-model value, e.g. an ablation) > ``odmt.<key>`` (a global override, null
by default) > ``odmt.datasets.<base.dataset>.<key>`` (the paper's per-dataset values) > the model's Config default.
Trainer and evaluation options merge the same way: ``models.<name>.train`` > ``odmt.datasets.<ds>.train`` (e.g. the
paper's epoch count) > ``odmt.train``; ``models.<name>.evaluate`` > ``odmt.evaluate`` (``mask_history: true``, ...).
So the ablations in ``models`` only state what they change.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ParamError
from ..params import get

FAMILY_ARCHS = ("odmt", "sasrec_lf", "sasrec_ef")
RESOLVED_KEYS = ("T", "alpha", "id_init", "modalities")


def resolve(params: dict[str, Any], model: str, dataset: str | None = None) -> dict[str, Any]:
    """A copy of ``params`` whose ``models.<model>`` carries the ODMT-section values that apply to it."""
    params = copy.deepcopy(params)
    models = get(params, "models")
    if model not in models:
        raise ParamError(f"models.{model}", f"no such model; ODMT-family models: {get(params, 'odmt.models', [])}")
    entry = models[model] = dict(models[model] or {})
    arch = entry.get("arch", model)
    if arch not in FAMILY_ARCHS:
        raise ParamError(f"models.{model}.arch", f"{arch!r} is not an ODMT-family model {list(FAMILY_ARCHS)}")
    section = get(params, "odmt", {}) or {}
    ds = dataset or get(params, "base.dataset")
    per_ds = (section.get("datasets") or {}).get(ds) or {}
    unknown = sorted(set(per_ds) - set(RESOLVED_KEYS) - {"train"})
    if unknown:
        raise ParamError(f"odmt.datasets.{ds}.{unknown[0]}", f"unknown key; known: {list(RESOLVED_KEYS) + ['train']}")
    # the baselines keep their own ID initialisation (random) and have no distillation; modalities apply to all
    for key in RESOLVED_KEYS if arch == "odmt" else ("modalities",):
        if key in entry:
            continue
        if section.get(key) is not None:
            entry[key] = section[key]
        elif per_ds.get(key) is not None:
            entry[key] = per_ds[key]
    # trainer / evaluation options: the entry's own > the dataset's (train only) > the family's (odmt.train/evaluate)
    entry["train"] = {**(section.get("train") or {}), **(per_ds.get("train") or {}), **(entry.get("train") or {})}
    entry["evaluate"] = {**(section.get("evaluate") or {}), **(entry.get("evaluate") or {})}
    return params


def run(params: dict[str, Any], model: str, seed: int | None = None, **overrides: Any) -> Any:
    """Resolve the ODMT section into ``models.<model>``, then run the engine's train stage."""
    from . import train as engine_train

    return engine_train.run(resolve(params, model, overrides.get("dataset")), model=model, seed=seed, **overrides)
