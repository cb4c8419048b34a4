"""KDSR (ECIR'24): any backbone with trainable modality tables + Correlation Distillation Learning.

``loss = backbone loss + Σ_modality (λ_S · L_S + λ_C · L_C)`` (Eq. 7, per-modality weights), returned as a dict
with the parts for logging. Scoring, item representations and the modality/ID tables are the backbone's: at
inference KDSR costs exactly what its backbone costs (§3.4).

``backbone`` is a registered model: ``sasrec`` / ``gru4rec`` (forced to ``item_repr: tuned`` on the CDL
modalities, i.e. the paper's SASRM / GRU4Rec with fine-tuned modality embeddings), ``mmsr`` (the paper's Amazon
backbone) or ``kdsr_graph`` (the released code's backbone). ``backbone_cfg`` holds that backbone's own options.

Asynchronous training (``async_*``) is not applied by the model: the ``train_kdsr`` stage turns these fields into
the trainer's LR schedule (:func:`modalrec.train.async_lr.async_schedule`) on the ``modality_tables`` group
that the backbone's :meth:`param_groups` names. They live here so they are recorded with the run's options.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ParamError
from ..losses.cdl import CDL, CDLConfig
from .base import Batch, ModelContext, SeqRecModel, build_model, make_config, model_class, register_model

REPR_BACKBONES = ("sasrec", "gru4rec")  # ItemRepr backbones: CDL needs item_repr=tuned
BACKBONES = REPR_BACKBONES + ("mmsr", "kdsr_graph")
REPRESENTS = ("scored", "raw")
NEGLIGIBLE = 0.01  # a CDL term whose gradient on the tables is under 1% of the rec loss's is flagged
PROBE_BATCH, PROBE_SEED = 32, 12345  # term_sizes' fixed batch of training windows (once an epoch: kept small)


@register_model("kdsr")
class KDSR(SeqRecModel):
    @dataclass
    class Config(CDLConfig):
        """CDL's options are inherited (:class:`~modalrec.losses.cdl.CDLConfig`: ``modalities``, ``weights``,
        ``tau``, ``holistic_loss``, ``diagonal``, ``proj_layers``, ``xi``, ``teacher_cache``); KDSR adds the
        backbone and the asynchronous training of the modality tables."""

        backbone: str = "sasrec"  # sasrec | gru4rec | mmsr | kdsr_graph
        backbone_cfg: dict[str, Any] = field(default_factory=dict)
        # what CDL supervises: "scored" = the modality representation the backbone scores with (an ItemRepr
        # backbone's standardised, projected table rows; graph backbones read their raw tables: the same) | "raw" E
        represent: str = "raw"
        # --- asynchronous training of the modality tables (applied by the train_kdsr stage)
        async_lr: str = "linear"  # linear (paper) | constant (released code, ε/4) | none (w/o AT)
        async_start: float = 0.1
        async_epochs: int = 10
        async_factor: float = 0.25
        preset: str | None = None  # the kdsr.presets entry these values came from (recorded only)

    def __init__(self, cfg: "KDSR.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'kdsr')}"
        self.cfg = cfg
        arch, bcfg = backbone_config(cfg, key)
        self.backbone = build_model(f"{getattr(self, 'registry_name', 'kdsr')}.backbone_cfg", bcfg, ctx, arch)
        tables = self.backbone.modality_tables()
        missing = [m for m in cfg.modalities if m not in tables]
        if missing:
            raise ParamError(f"{key}.modalities", f"backbone {arch!r} has no trainable {missing[0]!r} table")
        if cfg.represent not in REPRESENTS:
            raise ParamError(f"{key}.represent", f"must be one of {REPRESENTS}, got {cfg.represent!r}")
        self._rows_fn = None
        if cfg.represent == "scored" and hasattr(self.backbone, "modality_rows"):
            self._rows_fn = self.backbone.modality_rows
            self.backbone.items.keep_sources = True  # CDL reads the rows of the step's table, computed once
            one = torch.ones(1, dtype=torch.long)
            with torch.no_grad():
                dims = {int(self._rows_fn(m, one).shape[-1]) for m in cfg.modalities}
        else:
            dims = {tables[m].weight.shape[1] for m in cfg.modalities}
        if len(dims) > 1:
            raise ParamError(f"{key}.modalities", f"modality tables differ in width {sorted(dims)}")
        self._probe: Batch | None = None  # a fixed batch of training windows for term_sizes (not a parameter)
        ccfg = cdl_config(cfg)
        self.cdl = CDL(ccfg, ctx.teacher, dim=dims.pop() if dims else 128, key=key) if uses_teacher(cfg) else None

    # -- training
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        base = self.backbone.loss(batch)
        parts = dict(base) if isinstance(base, dict) else {"loss": base}
        rec = parts.pop("loss")
        out = {f"rec/{k}" if not k.startswith("rec") else k: v for k, v in parts.items()}
        out["rec"] = rec.detach()
        total = rec
        if self.cdl is not None:
            try:
                c = self.cdl(batch.input_ids, self.backbone.modality_tables(), self._rows_fn)
            finally:
                self._forget()
            total = rec + c.pop("cdl")
            out.update(c)
        else:
            self._forget()
        out["loss"] = total
        return out

    def _forget(self) -> None:
        items = getattr(self.backbone, "items", None)
        if items is not None and hasattr(items, "forget_sources"):
            items.forget_sources()

    def term_sizes(self, batch: Batch | None = None) -> dict[str, float]:
        """The size of every loss term on one batch (default: the fixed probe batch taken at fit start), in the
        model's current mode: ``terms/rec`` and ``terms/rec_grad`` (the recommendation loss and the norm of its
        gradient on the trainable modality tables), and for every weighted CDL term ``t`` (``<modality>_holistic``,
        ``<modality>_code``: λ · L) ``terms/<t>``, ``terms/<t>_grad`` (its gradient norm on the tables),
        ``terms/<t>_grad_ratio`` (that over the rec gradient's norm on the same tables) and ``terms/<t>_negligible``
        (1.0 when the ratio is under :data:`NEGLIGIBLE`, 1% of the recommendation loss's gradient). The backbone
        runs in the model's mode (eval after validation: no dropout); CDL samples its code-head pairs as in
        training (``code_pairs``), from the same random stream, whose state is restored afterwards."""
        batch = batch if batch is not None else self._probe
        if batch is None or self.cdl is None:
            return {}
        batch = batch.to(next(self.parameters()).device)
        tables = self.backbone.modality_tables()
        params = {m: tables[m].weight for m in self.cfg.modalities}
        was = self.cdl.training
        dev = next(self.parameters()).device
        # the probe leaves the training's random streams (forked and restored) and CDL's mode as they were
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            self.cdl.train()  # CDL's own mode only: the code head's pairs are sampled as in training
            try:
                return self._term_sizes(batch, tables, params)
            finally:
                self.cdl.train(was)

    def _term_sizes(self, batch: Batch, tables: dict[str, nn.Embedding], params: dict[str, Tensor]
                    ) -> dict[str, float]:
        with torch.enable_grad():
            base = self.backbone.loss(batch)
            self._forget()  # the rec gradient below frees the table's graph: CDL computes its own rows
            rec = base["loss"] if isinstance(base, dict) else base
            g_rec = dict(zip(params, torch.autograd.grad(rec, list(params.values()), allow_unused=True)))
            out = {"terms/rec": float(rec.detach()), "terms/rec_grad": _norm(list(g_rec.values()))}
            names = [f"{m}_holistic" for m in self.cdl.hol_mods] + [f"{m}_code" for m in self.cdl.code_mods]
            for name in names:  # one forward each: the hand-written backwards reuse their saved tensors in place
                t = self.cdl(batch.input_ids, tables, self._rows_fn, keep_terms=True)["terms"][name]
                m = name.rsplit("_", 1)[0]
                g = torch.autograd.grad(t, [params[m]], allow_unused=True)[0]
                gn, rn = _norm([g]), _norm([g_rec[m]])
                ratio = gn / rn if rn > 0 else float("inf")
                out[f"terms/{name}"] = float(t.detach())
                out[f"terms/{name}_grad"] = gn
                out[f"terms/{name}_grad_ratio"] = ratio
                out[f"terms/{name}_negligible"] = float(ratio < NEGLIGIBLE)
        return out

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        groups = self.backbone.param_groups(lr)
        if not any(g.get("name") == "modality_tables" for g in groups):
            raise ParamError("models.<name>.backbone", "the backbone does not name a 'modality_tables' group")
        if self.cdl is not None:
            groups.append({"params": [p for p in self.cdl.parameters() if p.requires_grad], "lr": lr, "name": "cdl"})
        return groups

    def set_output_loss(self, loss) -> None:
        self.backbone.set_output_loss(loss)  # the recommendation loss is the backbone's; CDL is unchanged

    def on_epoch_start(self, epoch: int) -> None:
        self.backbone.on_epoch_start(epoch)

    def on_fit_start(self, windows: Any) -> None:
        """Ask the teacher about every pair the training windows supervise before epoch 1 (:meth:`CDL.prefill`),
        and keep a fixed, seeded batch of training windows for :meth:`term_sizes`."""
        self.backbone.on_fit_start(windows)
        if self.cdl is not None and len(windows):
            from ..data.batching import train_batches

            self._probe = next(iter(train_batches(windows, PROBE_BATCH, PROBE_SEED, 0)))
        if self.cdl is not None and len(windows):
            t0 = time.perf_counter()
            n = self.cdl.prefill(torch.from_numpy(windows.items[:, :-1]), next(self.parameters()).device)
            if n:
                print(f"kdsr: the teacher's answers for {n:,} item pairs of the training windows cached in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)

    # -- inference and hooks: the backbone's
    def score_all(self, input_ids: Tensor) -> Tensor:
        return self.backbone.score_all(input_ids)

    def score_factors(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.backbone.score_factors(input_ids)

    def item_representations(self) -> Tensor:
        return self.backbone.item_representations()

    def modality_tables(self) -> dict[str, nn.Embedding]:
        return self.backbone.modality_tables()

    def id_table(self) -> nn.Embedding:
        return self.backbone.id_table()

    @classmethod
    def required_inputs(cls, cfg: Any) -> list[str]:
        arch, bcfg = backbone_config(cfg, "models.<name>")
        bcls = model_class(arch, arch)
        needs = list(bcls.required_inputs(make_config(bcls, bcfg, "models.<name>.backbone_cfg")))
        needs += [f"compressed/{m}" for m in cfg.modalities if f"compressed/{m}" not in needs]
        if uses_teacher(cfg):
            needs.append("teacher")
        return needs


def _norm(grads: list[Tensor | None]) -> float:
    """The L2 norm of a list of (dense or sparse, possibly absent) gradients."""
    tot = 0.0
    for g in grads:
        if g is None:
            continue
        v = g.coalesce().values() if g.is_sparse else g
        tot += float(v.double().pow(2).sum())
    return tot ** 0.5


def uses_teacher(cfg: KDSR.Config) -> bool:
    """False for "w/o both" (every weight 0): the run is the backbone alone and needs no teacher."""
    return any(float(v) > 0 for m in cfg.modalities for v in (cfg.weights.get(m) or [0, 0]))


def cdl_config(cfg: KDSR.Config) -> CDLConfig:
    """The CDL options of a KDSR config (its :class:`CDLConfig` fields, copied) as a CDLConfig of their own."""
    return CDLConfig(**{f.name: copy.deepcopy(getattr(cfg, f.name)) for f in fields(CDLConfig)})


def backbone_config(cfg: KDSR.Config, key: str) -> tuple[str, dict[str, Any]]:
    """The backbone's registered name and options: every backbone reads KDSR's modalities unless its
    ``backbone_cfg`` names its own (a text-only dataset needs no image table in MMSR either); ItemRepr backbones get
    ``item_repr: tuned``."""
    if cfg.backbone not in BACKBONES:
        raise ParamError(f"{key}.backbone", f"must be one of {BACKBONES}, got {cfg.backbone!r}")
    bcfg = dict(cfg.backbone_cfg or {})
    bcfg.setdefault("modalities", list(cfg.modalities))
    if cfg.backbone in REPR_BACKBONES:
        if bcfg.get("item_repr", "tuned") != "tuned":
            raise ParamError(f"{key}.backbone_cfg.item_repr", "KDSR distils into trainable tables: must be 'tuned'")
        bcfg["item_repr"] = "tuned"
    return cfg.backbone, bcfg
