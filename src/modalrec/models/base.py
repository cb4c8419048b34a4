"""The model contract and registry.

A model is an ``nn.Module`` with a training loss, scores over all items for a batch of histories, and its item
representations. Models register by name with a ``Config`` dataclass; their defaults live in params.yaml under
``models.<name>``. A model never reads files: everything it needs comes through :class:`ModelContext`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError


@dataclass
class Batch:
    """A training batch. Histories are left-padded with 0; ``targets[b, t]`` is the item after ``input_ids[b, :t+1]``."""

    input_ids: Tensor  # [B, L] long
    targets: Tensor  # [B, L] long, 0 = no loss at this position
    users: Tensor  # [B] long

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True)
                        for f in dataclasses.fields(self)})


@dataclass
class ModelContext:
    """Everything a model may need from the data, prepared by the train stage."""

    n_items: int  # N; tensors have N+1 rows, row 0 = padding
    max_len: int
    features: dict[str, Tensor] = field(default_factory=dict)  # modality -> [N+1, d] frozen encoder features
    compressed: dict[str, Tensor] = field(default_factory=dict)  # modality -> [N+1, 128] AE codes m~
    item_counts: Tensor | None = None  # [N+1] training popularity
    teacher: Any = None  # modalrec.teacher.teacher.Teacher for KDSR
    tokens: dict[str, Any] | None = None  # modality -> TokenCache (ODMT)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class SeqRecModel(nn.Module):
    """Base class: subclasses implement :meth:`loss`, :meth:`score_all` and :meth:`item_representations`."""

    Config: type = object

    def loss(self, batch: Batch) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError

    def score_all(self, input_ids: Tensor) -> Tensor:
        """Scores ``[B, N+1]`` of every item for left-padded histories ``[B, L]``; column 0 is ``-inf``."""
        raise NotImplementedError

    def item_representations(self) -> Tensor:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; override for per-group learning rates (KDSR's asynchronous training)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "all"}]

    def set_output_loss(self, loss: Any) -> None:
        """Trainer hook for ``train.loss`` other than ``full``: a :class:`modalrec.losses.sampled.OutputLoss` to use
        instead of the full softmax over the catalogue. Only models whose loss is that full softmax support it."""
        if loss is not None:
            raise ParamError("train.loss", f"{type(self).__name__} trains with a loss of its own; only 'full' applies")

    def on_epoch_start(self, epoch: int) -> None:
        """Hook called by the trainer with the 1-based epoch (ramp-ups, LR warm-ups)."""

    def on_fit_start(self, windows: Any) -> None:
        """Hook called by the trainer once before the first epoch (also when resuming), with every training window
        (:class:`~modalrec.data.batching.TrainWindows`), for one-off work that depends on the training data
        (KDSR asks its teacher about the windows' item pairs here)."""

    @classmethod
    def required_inputs(cls, cfg: Any) -> list[str]:
        """The cached inputs the train/evaluate stages must load into :class:`ModelContext` for this config:
        ``features/<modality>`` (encode cache), ``compressed/<modality>`` (AE codes m~), ``tokens/<modality>``
        (token-level cache) and ``teacher`` (KDSR codebooks). Only these become the stage's inputs.
        The default reads ``cfg.item_repr`` / ``cfg.modalities``: a config without ``item_repr`` reads the frozen
        features of the modalities it lists (the paper baselines); models with other needs override it."""
        mods = list(getattr(cfg, "modalities", []) or [])
        kind = getattr(cfg, "item_repr", "frozen" if mods else "id")
        if kind == "frozen":
            return [f"features/{m}" for m in mods]
        if kind in ("tuned", "frozen_m"):
            return [f"compressed/{m}" for m in mods]
        return []


_REGISTRY: dict[str, type[SeqRecModel]] = {}


def register_model(name: str) -> Callable[[type[SeqRecModel]], type[SeqRecModel]]:
    def deco(cls: type[SeqRecModel]) -> type[SeqRecModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def available_models() -> list[str]:
    from . import _load_all  # noqa: F401  (imports every model file so they register)

    return sorted(_REGISTRY)


def make_config(cls: type[SeqRecModel], cfg: dict[str, Any], key: str) -> Any:
    """Build ``cls.Config`` from a params dict; unknown keys are a ParamError naming ``key.<field>``."""
    from ..params import dataclass_from

    return dataclass_from(cls.Config, cfg, key, "option for this model")


def model_class(name: str, arch: str | None = None) -> type[SeqRecModel]:
    """The registered class for a params entry ``models.<name>`` (``arch`` defaults to ``name``).

    Imports only the arch's own file, ``models/<arch>.py`` (so a run loads, and its DVC stage depends on, just its
    model's code); an arch that no file registers is a ParamError listing every registered model."""
    arch = arch or name
    if arch not in _REGISTRY and isinstance(arch, str) and arch.isidentifier() and not arch.startswith("_"):
        try:
            importlib.import_module(f"{__package__}.{arch}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{arch}":
                raise
    if arch not in _REGISTRY:
        raise ParamError(f"models.{name}.arch", f"unknown model {arch!r}; available: {available_models()}")
    return _REGISTRY[arch]


def build_model(name: str, cfg: dict[str, Any], ctx: ModelContext, arch: str | None = None) -> SeqRecModel:
    """Instantiate a registered model. ``arch`` is the registered class name when ``name`` is a params alias
    (for example ``sasrec_frozen`` uses arch ``sasrec`` with other options)."""
    cls = model_class(name, arch)
    config = make_config(cls, cfg, f"models.{name}")
    try:
        return cls(config, ctx)
    except ParamError as e:  # a model names its options models.<arch>.<field>; an alias's error names the alias
        own = f"models.{cls.registry_name}"
        if name == cls.registry_name or not (e.key == own or e.key.startswith(own + ".")):
            raise
        raise ParamError(f"models.{name}" + e.key[len(own):], e.message) from None


def catalogue_logits(h: Tensor, table: Tensor) -> Tensor:
    """Scores ``h [n, d] @ table [N+1, d]ᵀ`` of every item, column 0 (padding) at ``-inf``."""
    s = h @ table.t()
    s[:, 0] = float("-inf")
    return s


def catalogue_ce(h: Tensor, table: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Full-softmax cross-entropy of the states ``h [n, d]`` against the whole catalogue ``table [N+1, d]`` for
    ``targets [n]`` (RecBole's CE loss), in float32."""
    return F.cross_entropy(catalogue_logits(h, table).float(), targets, reduction=reduction)


def recbole_init(module: nn.Module) -> None:
    """RecBole's ``_init_weights`` (``module.apply(recbole_init)``): Linear / Embedding ~ N(0, 0.02), biases 0,
    LayerNorm (1, 0). The paper baselines' reference code (RecBole, DIF-SR, NOVA, FDSA, MMSRec) all start so."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
