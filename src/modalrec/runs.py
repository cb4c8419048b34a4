"""How a run resolves: :func:`resolve_run` turns a params entry ``models.<name>`` into a :class:`RunSpec` for every
family, and :func:`training_hooks` gives the family's trainer hooks. (What the pipeline runs, ``runs.<family>``, is
read by :func:`modalrec.params.listed_runs`.)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ParamError
from .params import FAMILIES, get, is_proposed, listed_runs  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from .train.trainer import TrainConfig

# ---------------------------------------------------------------------------------------------------------------
# resolve_run: one model entry -> everything train and evaluate need, for every family
# ---------------------------------------------------------------------------------------------------------------

FAMILY_ARCHS = {"kdsr": ("kdsr", "mmsr", "kdsr_graph"), "odmt": ("odmt",)}  # any other arch: a baseline
ENTRY_KEYS = ("arch", "train", "evaluate")  # keys of models.<name> that are not model Config fields
TRAIN_ONLY = ("max_len", "device")  # keys of the train section that are not TrainConfig fields
# odmt.<key> / odmt.datasets.<ds>.<key> fill these (docs/odmt.md); ramp_fraction, when set, replaces alpha
ODMT_KEYS = ("T", "alpha", "id_init", "modalities", "ramp_fraction", "wait_for_ramp", "kd_max_weight", "kd_form",
             "detach_teacher", "init_text_pool", "init_standardise", "user_mask", "user_encoder")


@dataclass
class RunSpec:
    """A params entry ``models.<name>`` resolved for one seed: its family's section folded in, split into the model
    options, the trainer options and the evaluation overrides, with every default applied."""

    name: str
    arch: str
    family: str  # baselines | kdsr | odmt
    cfg: dict[str, Any]  # model Config fields
    train: TrainConfig
    evaluate: dict[str, Any]  # protocol overrides of this model (e.g. ODMT's mask_history)
    dataset: str
    seed: int
    max_len: int
    device: str


def family_of(arch: str) -> str:
    return next((f for f, archs in FAMILY_ARCHS.items() if arch in archs), "baselines")


def default_seed(params: dict[str, Any]) -> int:
    """The seed a command uses when given none: the first of ``base.seeds``."""
    seeds = get(params, "base.seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ParamError("base.seeds", f"must be a non-empty list of integers, got {seeds!r}")
    return seeds[0]


def resolve_run(params: dict[str, Any], model: str, seed: int | None = None, dataset: str | None = None) -> RunSpec:
    """Resolve ``models.<model>`` for training or evaluation; the one place a family's section applies.

    Precedence, highest first. Model options: ``models.<name>.<key>`` > the family's values (KDSR:
    ``kdsr.presets.<preset>`` and ``kdsr.backbones.<backbone>``; ODMT: ``odmt.<key>`` > ``odmt.datasets.<ds>``) >
    the model's Config default. Trainer options: ``models.<name>.train`` > the family's (``kdsr.presets.<p>.train``
    > ``kdsr.train``; ``odmt.datasets.<ds>.train`` > ``odmt.train``) > the ``train`` section. Evaluation overrides:
    ``models.<name>.evaluate`` > the family's (``kdsr.presets.<p>.evaluate`` > ``kdsr.evaluate``; ``odmt.evaluate``)."""
    from .train.trainer import TrainConfig

    models = get(params, "models")
    if not isinstance(models, dict) or model not in models:
        raise ParamError(f"models.{model}", f"no such model in params.yaml; defined: {sorted(models or {})}")
    entry = copy.deepcopy(models[model] or {})
    if not isinstance(entry, dict):
        raise ParamError(f"models.{model}", f"must be a mapping of options, got {entry!r}")
    arch = entry.get("arch", model)
    family = family_of(arch)
    ds = dataset or get(params, "base.dataset")
    family_train, family_eval = {"kdsr": _fold_kdsr, "odmt": _fold_odmt}.get(family, _fold_none)(
        params, model, arch, entry, ds)
    entry.pop("arch", None)
    train_over = {**family_train, **(entry.pop("train", None) or {})}
    eval_over = {**family_eval, **(entry.pop("evaluate", None) or {})}
    section = dict(get(params, "train", {}) or {})
    for k in train_over:
        if k == "device":
            raise ParamError(f"models.{model}.train.{k}", "set it in the train section")
    max_len = train_over.pop("max_len", section.get("max_len", 50))
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise ParamError("train.max_len", f"must be an integer >= 1, got {max_len!r}")
    trainer = TrainConfig.from_params({**{k: v for k, v in section.items() if k not in TRAIN_ONLY}, **train_over},
                                      key="train")
    if family == "odmt" and entry.get("ramp_fraction") is not None:  # the ramp ends within the epoch cap
        entry["alpha"] = ramp_length(entry["ramp_fraction"], trainer.epochs, f"models.{model}.ramp_fraction")
    device = str(section.get("device", "auto"))
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = RunSpec(model, arch, family, entry, trainer, eval_over, ds,
                   int(seed if seed is not None else default_seed(params)), max_len, device)
    if family == "odmt":
        wait_for_ramp(spec)
    return spec


def ramp_length(fraction: Any, epochs: int, key: str = "odmt.ramp_fraction") -> float:
    """ODMT's ramp length α (epochs) for ``ramp_fraction``: the ramp ends after that fraction of the epoch cap
    (``round(fraction · epochs)``, at least 1), so the distillation weight reaches its maximum within the epochs that
    epoch selection can pick. With α = 20 and a 20-epoch cap the weight was 0.06 at epoch 5 and 0.29 at epoch 10."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ParamError(key, f"must be a number in (0, 1] or null, got {fraction!r}")
    return max(1.0, float(round(fraction * epochs)))


def wait_for_ramp(spec: RunSpec) -> None:
    """ODMT's distillation weight ramps up over α epochs; with ``wait_for_ramp`` early stopping must not end a
    distilling run before the ramp's end plus patience (issue 19: on MovieLens-100K `odmt_gru4rec` and
    `odmt_nextitnet` each lost a seed that stopped at epoch 13 / 15 of a 15-epoch ramp, on a validation dip while
    the weight was still rising). So the run's ``min_epochs`` becomes at least ``ceil(α) + patience`` (KDSR's rule
    for its warm-up, :func:`modalrec.train.kdsr_hooks.wait_for_warm_up`). Runs without distillation (late fusion,
    independent, ``kd_max_weight`` 0, a constant weight α < 1) and the released settings (no such rule) are left as
    they are; ``min_epochs`` above the epoch cap only means the run takes its whole cap."""
    cfg = model_config(spec)
    if cfg.wait_for_ramp and cfg.objective == "online_distill" and cfg.alpha >= 1 and cfg.kd_max_weight > 0:
        spec.train.hold_until(math.ceil(cfg.alpha))


def _fold_none(params, model, arch, entry, ds) -> tuple[dict, dict]:
    return {}, {}


def _fold_kdsr(params, model, arch, entry, ds) -> tuple[dict, dict]:
    """KDSR: the preset's options (``arch: kdsr``) and the backbone's defaults; a plain backbone (mmsr,
    kdsr_graph) takes its options from ``kdsr.backbones.<arch>``."""
    section = get(params, "kdsr", {}) or {}
    preset: dict[str, Any] = {}
    backbones = section.get("backbones") or {}
    if arch == "kdsr":
        name = entry.get("preset", section.get("preset", "kdsr"))
        presets = section.get("presets") or {}
        if name is not None:
            if name not in presets:
                raise ParamError(f"models.{model}.preset", f"unknown preset {name!r}; kdsr.presets has {sorted(presets)}")
            preset = dict(presets[name] or {})
        for k, v in preset.items():
            if k not in ENTRY_KEYS:
                entry.setdefault(k, copy.deepcopy(v))
        entry["preset"] = name
        backbone = entry.get("backbone", "sasrec")
        entry["backbone_cfg"] = {**(backbones.get(backbone) or {}), **(entry.get("backbone_cfg") or {})}
    else:
        for k, v in (backbones.get(arch) or {}).items():
            entry.setdefault(k, copy.deepcopy(v))
    return ({**(section.get("train") or {}), **(preset.get("train") or {})},
            {**(section.get("evaluate") or {}), **(preset.get("evaluate") or {})})


def _fold_odmt(params, model, arch, entry, ds) -> tuple[dict, dict]:
    """ODMT: ``odmt.<key>`` (global overrides, null = unset) > ``odmt.datasets.<ds>.<key>`` (the paper's values)
    for the keys of :data:`ODMT_KEYS`; the entry's own value wins over both. (``ramp_fraction`` becomes ``alpha``
    in :func:`resolve_run`, which knows the run's epoch cap.)"""
    section = get(params, "odmt", {}) or {}
    per_ds = (section.get("datasets") or {}).get(ds) or {}
    unknown = sorted(set(per_ds) - set(ODMT_KEYS) - {"train"})
    if unknown:
        raise ParamError(f"odmt.datasets.{ds}.{unknown[0]}", f"unknown key; known: {list(ODMT_KEYS) + ['train']}")
    if section.get("alpha") is not None and section.get("ramp_fraction") is not None and "alpha" not in entry:
        raise ParamError("odmt.alpha", f"odmt.ramp_fraction ({section['ramp_fraction']}) sets the ramp length; "
                                       "set odmt.ramp_fraction=null to use a fixed alpha")
    for key in ODMT_KEYS:
        if key in entry:
            continue
        if section.get(key) is not None:
            entry[key] = section[key]
        elif per_ds.get(key) is not None:
            entry[key] = per_ds[key]
    return {**(section.get("train") or {}), **(per_ds.get("train") or {})}, dict(section.get("evaluate") or {})


def model_config(spec: RunSpec) -> Any:
    """The model's Config object for a resolved run."""
    from .models.base import make_config, model_class

    return make_config(model_class(spec.name, spec.arch), spec.cfg, f"models.{spec.name}")


FAMILY_HOOKS = {"kdsr": "modalrec.train.kdsr_hooks"}  # family -> module with training_hooks(spec, params, root)


def training_hooks(spec: RunSpec, params: dict[str, Any], data_root: str | Path = "data"):
    """``(lr_schedule, epoch_callback)`` for the trainer: the family's own (KDSR: asynchronous LR of the modality
    tables and the forgetting probe), ``(None, None)`` for the others. Imported by name, so only a family's runs
    load (and their DVC stages depend on) its hooks."""
    module = FAMILY_HOOKS.get(spec.family)
    if module is None:
        return None, None
    import importlib

    return importlib.import_module(module).training_hooks(spec, params, data_root)
