"""Stage `train_kdsr`: train one KDSR-family model (``models.<name>`` with ``arch: kdsr``, or the plain ``mmsr`` /
``kdsr_graph`` backbones) for one seed, through the engine's ``modalrec.stages.train.run``.

Before that, the ``kdsr`` params section is folded into the model's entry (precedence, highest first):

- model options: ``models.<name>.<key>`` > ``kdsr.presets.<preset>.<key>`` > the model's Config default, where
  ``preset`` is ``models.<name>.preset`` (else ``kdsr.preset``). ``backbone_cfg``: ``models.<name>.backbone_cfg`` >
  ``kdsr.backbones.<backbone>``;
- trainer options: ``models.<name>.train`` > ``kdsr.presets.<preset>.train`` > ``kdsr.train`` > the ``train`` section;
- evaluation protocol: ``models.<name>.evaluate`` > ``kdsr.presets.<preset>.evaluate`` > ``kdsr.evaluate``.

So ``dvc exp run -S kdsr.presets.kdsr.tau=1.0`` changes every model on the paper preset, while the ablations in
``models`` only state what they change. The asynchronous LR schedule of the modality tables comes from the
resolved ``async_*`` options, and the modality-forgetting probe (``kdsr.forgetting``) is the per-epoch callback.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ParamError
from ..params import get

FAMILY_ARCHS = ("kdsr", "mmsr", "kdsr_graph")
ENTRY_ONLY = ("arch", "train", "evaluate")


def resolve(params: dict[str, Any], model: str, dataset: str | None = None) -> dict[str, Any]:
    """A copy of ``params`` whose ``models.<model>`` carries the ``kdsr``-section values that apply to it."""
    params = copy.deepcopy(params)
    models = get(params, "models")
    if model not in (models or {}):
        raise ParamError(f"models.{model}", f"no such model; KDSR-family models: {get(params, 'kdsr.models', [])}")
    entry = models[model] = dict(models[model] or {})
    arch = entry.get("arch", model)
    if arch not in FAMILY_ARCHS:
        raise ParamError(f"models.{model}.arch", f"{arch!r} is not a KDSR-family model {list(FAMILY_ARCHS)}")
    section = get(params, "kdsr", {}) or {}
    preset: dict[str, Any] = {}
    if arch == "kdsr":
        name = entry.get("preset", section.get("preset", "kdsr"))
        presets = section.get("presets") or {}
        if name is not None:
            if name not in presets:
                raise ParamError(f"models.{model}.preset", f"unknown preset {name!r}; kdsr.presets has {sorted(presets)}")
            preset = dict(presets[name] or {})
        for k, v in preset.items():
            if k not in ENTRY_ONLY:
                entry.setdefault(k, copy.deepcopy(v))
        entry["preset"] = name
        backbone = entry.get("backbone", "sasrec")
        base_bcfg = ((section.get("backbones") or {}).get(backbone)) or {}
        entry["backbone_cfg"] = {**base_bcfg, **(entry.get("backbone_cfg") or {})}
    else:  # a plain backbone of this family (no CDL): its options from kdsr.backbones unless the entry sets them
        for k, v in ((section.get("backbones") or {}).get(arch) or {}).items():
            entry.setdefault(k, copy.deepcopy(v))
    entry["train"] = {**(section.get("train") or {}), **(preset.get("train") or {}), **(entry.get("train") or {})}
    entry["evaluate"] = {**(section.get("evaluate") or {}), **(preset.get("evaluate") or {}),
                         **(entry.get("evaluate") or {})}
    return params


def model_config(params: dict[str, Any], model: str) -> Any:
    """The Config object of a resolved ``models.<model>`` entry."""
    from ..models.base import make_config, model_class

    entry = get(params, f"models.{model}")
    cls = model_class(model, entry.get("arch", model))
    return make_config(cls, {k: v for k, v in entry.items() if k not in ENTRY_ONLY}, f"models.{model}")


def lr_schedule(params: dict[str, Any], model: str):
    """The asynchronous LR schedule of the modality tables for a resolved entry (None = all groups at ε)."""
    from ..train.async_lr import async_schedule

    cfg = model_config(params, model)
    if get(params, f"models.{model}").get("arch", model) != "kdsr":
        return None
    return async_schedule(cfg.async_lr, cfg.async_start, cfg.async_epochs, cfg.async_factor, key=f"models.{model}")


def forgetting_probe(params: dict[str, Any], model: str, data_root: str | Path = "data"):
    """The per-epoch modality-forgetting probe (``kdsr.forgetting``), with M = the compress stage's m̃."""
    fcfg = dict(get(params, "kdsr.forgetting", {}) or {})
    unknown = sorted(set(fcfg) - {"enabled", "pairs", "seed"})
    if unknown:
        raise ParamError(f"kdsr.forgetting.{unknown[0]}", "unknown key; known: enabled, pairs, seed")
    if not fcfg.get("enabled", True):
        return None
    from ..analysis.forgetting import ForgettingProbe
    from ..encode.cache import load_features

    ds = get(params, "base.dataset")
    ref = {}
    for m in getattr(model_config(params, model), "modalities", None) or []:
        x, _, _ = load_features(Path(data_root) / "compressed" / ds / f"{m}.parquet")
        ref[m] = torch.from_numpy(np.ascontiguousarray(x))
    return ForgettingProbe(ref, int(fcfg.get("pairs", 20000)), int(fcfg.get("seed", 0))) if ref else None


def run(params: dict[str, Any], model: str, seed: int | None = None, **overrides: Any) -> Path:
    """Resolve the ``kdsr`` section into ``models.<model>``, then run the engine's train stage with the
    asynchronous LR schedule and the forgetting probe."""
    from . import train as engine_train

    resolved = resolve(params, model, overrides.get("dataset"))
    if overrides.get("dataset"):
        resolved.setdefault("base", {})["dataset"] = overrides["dataset"]
    return engine_train.run(resolved, model=model, seed=seed, lr_schedule=lr_schedule(resolved, model),
                            epoch_callback=forgetting_probe(resolved, model, overrides.get("data_root", "data")),
                            **overrides)
