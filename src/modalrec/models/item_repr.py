"""Item representations: how an item id becomes a d-dimensional vector. A parameter of every backbone.

- ``id``: an ID embedding table only.
- ``frozen``: ID embedding fused with a learned projection of the cached encoder features, which stay fixed
  (the KDSR paper's SASRM / "static modality" setting).
- ``frozen_m``: as ``frozen``, but the fixed input is the compress stage's 128-d AE codes m~ (exactly what
  ``tuned`` and KDSR start from), so a frozen baseline and the tuned models read the same features.
- ``tuned``: ID embedding fused with per-item modality tables ``[N+1, 128]`` initialised from the compress stage's
  AE codes m~ and trained (KDSR's trainable e_a, e_v; the tables the CDL loss supervises), each projected to d.

Fusion of the ID vector with the modality vectors: ``sum``; ``concat`` (concatenation then a linear map to d);
``gate`` (a softmax over the sources from an MLP on their concatenation, as KDSR's code fuses its 4 sources).

The **same** representation embeds the input history and scores the candidates (``table()`` is both the input
lookup and the output matrix), so an item that is rare in training still gets a meaningful candidate vector from
its content: this is where modality information helps cold items.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ParamError
from .base import Batch, SeqRecModel, catalogue_ce, catalogue_logits

KINDS = ("id", "frozen", "frozen_m", "tuned")
FROZEN = ("frozen", "frozen_m")  # fixed inputs (buffers), not trainable tables
FUSIONS = ("sum", "concat", "gate")


def modality_input(source: dict[str, Tensor] | None, m: str, n_items: int, key: str,
                   what: str = "features (encode stage)") -> tuple[Tensor, Tensor]:
    """A float copy of the cached vectors ``source[m] [N+1, d_m]`` with row 0 (padding) zeroed, and ``has [N+1]``,
    the items whose vector is not all zero. A missing modality or a wrong number of rows is a :class:`ParamError`
    naming ``<key>.modalities``."""
    if source is None or m not in source:
        raise ParamError(f"{key}.modalities", f"modality {m!r} has no {what} for this dataset")
    x = source[m].float()
    if x.shape[0] != n_items + 1:
        raise ParamError(f"{key}.modalities", f"{m} {what} have {x.shape[0]} rows, expected N+1 = {n_items + 1}")
    x = x.clone()
    x[0] = 0
    return x, x.abs().sum(1) > 0


def standardisation(x: Tensor, has: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation (over the rows ``has``; the deviation floored at 1e-3) of ``x``."""
    mu = x[has].mean(0) if has.any() else torch.zeros(x.shape[1])
    sd = (x[has] - mu).pow(2).mean(0).sqrt().clamp(min=1e-3) if has.sum() > 1 else torch.ones(x.shape[1])
    return mu, sd


class ItemRepr(nn.Module):
    """Builds the ``[N+1, d]`` item table; row 0 (padding) is always zero."""

    def __init__(self, n_items: int, dim: int, kind: str = "id", modalities: Sequence[str] = ("image", "text"),
                 fusion: str = "sum", features: dict[str, Tensor] | None = None,
                 compressed: dict[str, Tensor] | None = None, key: str = "models.<name>", init_std: float = 0.02,
                 proj_scale: float = 0.1):
        super().__init__()
        if kind not in KINDS:
            raise ParamError(f"{key}.item_repr", f"must be one of {KINDS}, got {kind!r}")
        if fusion not in FUSIONS:
            raise ParamError(f"{key}.fusion", f"must be one of {FUSIONS}, got {fusion!r}")
        self.n_items, self.dim, self.kind, self.fusion = n_items, dim, kind, fusion
        # set by KDSR (CDL on the scored representation): table() keeps its modality embeddings for the same step's
        # modality_rows, which the caller drops with forget_sources() once the step's losses are formed
        self.keep_sources = False
        self._kept: dict[str, Tensor] = {}
        self.modalities: list[str] = [] if kind == "id" else list(modalities)
        if kind != "id" and not self.modalities:
            raise ParamError(f"{key}.modalities", f"item_repr {kind!r} needs at least one modality")
        self.id_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=init_std)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()

        source = features if kind == "frozen" else compressed
        what = "features (encode stage)" if kind == "frozen" else "compressed codes (compress stage)"
        self.frozen = kind in FROZEN
        self.proj = nn.ModuleDict()
        self.tables = nn.ModuleDict()
        for m in self.modalities:
            x, has = modality_input(source, m, n_items, key, what)
            # Fixed standardisation of the modality path (per-dimension z-scores), computed from
            # the vectors the model starts from: encoders differ by orders of magnitude in scale (L2-normalised
            # MiniLM vs 1000-d logits vs sigmoid AE codes) and the fused table is also the output matrix.
            mu, sd = standardisation(x, has)
            # ... and divided by sqrt(d_in) so each item's input vector has norm ~1: with Adam, every weight moves by
            # ~lr per step, so unnormalised 1280-d inputs would move the projected vectors by ~lr*d_in (unstable).
            sd = sd * math.sqrt(x.shape[1])
            self.register_buffer(f"mu_{m}", mu, persistent=False)
            self.register_buffer(f"sd_{m}", sd, persistent=False)
            self.register_buffer(f"has_{m}", has.unsqueeze(1).to(x.dtype), persistent=False)
            if self.frozen:
                # fixed input: a non-persistent buffer (the checkpoint stays small; ctx supplies it again at load)
                self.register_buffer(f"feat_{m}", x, persistent=False)
            else:
                t = nn.Embedding(n_items + 1, x.shape[1], padding_idx=0)
                with torch.no_grad():
                    t.weight.copy_(x)
                self.tables[m] = t
            self.proj[m] = nn.Linear(x.shape[1], dim)
            # small init so that at step 0 the modality part is on the scale of the ID embedding
            nn.init.normal_(self.proj[m].weight, std=proj_scale)
            nn.init.zeros_(self.proj[m].bias)
        k = 1 + len(self.modalities)
        if kind != "id" and fusion == "concat":
            self.fuse = nn.Linear(k * dim, dim)
        elif kind != "id" and fusion == "gate":
            self.fuse = nn.Sequential(nn.Linear(k * dim, dim), nn.ReLU(), nn.Linear(dim, k))

    # -- hooks used by KDSR's CDL and the forgetting analysis (contract) --
    def modality_tables(self) -> dict[str, nn.Embedding]:
        return {m: self.tables[m] for m in self.tables}

    def id_table(self) -> nn.Embedding:
        return self.id_emb

    def modality_vectors(self, m: str) -> Tensor:
        """Raw ``[N+1, d_m]`` modality vectors before projection (fixed features or trainable table)."""
        return getattr(self, f"feat_{m}") if self.frozen else self.tables[m].weight

    def modality_rows(self, m: str, ids: Tensor) -> Tensor:
        """``[K, d]``: :meth:`modality_embedding` of the items ``ids [K]`` (what the model scores with, for CDL: the
        standardised rows of the trainable table through the modality's projection). Read from this step's table
        when :meth:`table` kept it (``keep_sources``; the same values and graph, computed once), else computed for
        ``ids`` only."""
        kept = self._kept.get(m)
        if kept is not None:
            return kept.index_select(0, ids)
        x = (self.modality_vectors(m).index_select(0, ids) - getattr(self, f"mu_{m}")) / getattr(self, f"sd_{m}")
        return self.proj[m](x) * getattr(self, f"has_{m}").index_select(0, ids)

    def forget_sources(self) -> None:
        """Drop the modality embeddings :meth:`table` kept for this step (see ``keep_sources``)."""
        self._kept = {}

    def sources(self) -> list[Tensor]:
        """The ``[N+1, d]`` tables to fuse: ID first, then one per modality."""
        return [self.id_emb.weight] + [self.modality_embedding(m) for m in self.modalities]

    def modality_embedding(self, m: str) -> Tensor:
        """``[N+1, d]``: standardised modality vectors projected to d (items without the modality get 0)."""
        x = (self.modality_vectors(m) - getattr(self, f"mu_{m}")) / getattr(self, f"sd_{m}")
        return self.proj[m](x) * getattr(self, f"has_{m}")

    def table(self) -> Tensor:
        """The fused ``[N+1, d]`` item table (row 0 = 0). Cheap: O(N d) per call, once per training step."""
        if self.kind == "id":
            return self.id_emb.weight
        src = self.sources()
        if self.keep_sources and torch.is_grad_enabled():  # KDSR's CDL reads this step's rows (modality_rows)
            self._kept = dict(zip(self.modalities, src[1:]))
        if self.fusion == "sum":
            out = torch.stack(src, 0).sum(0)
        elif self.fusion == "concat":
            out = self.fuse(torch.cat(src, -1))
        else:
            w = torch.softmax(self.fuse(torch.cat(src, -1)), -1)  # [N+1, k]
            out = (torch.stack(src, -1) * w.unsqueeze(1)).sum(-1)
        mask = torch.ones(out.shape[0], 1, dtype=out.dtype, device=out.device)
        mask[0] = 0
        return out * mask

    def forward(self, ids: Tensor, table: Tensor | None = None) -> Tensor:
        """Embed ``ids`` of any shape; pass ``table`` when it is already computed this step."""
        if self.kind == "id" and table is None:
            return self.id_emb(ids)
        return nn.functional.embedding(ids, self.table() if table is None else table)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``id``, ``modality_tables`` (KDSR's asynchronous LR targets), ``modality_proj``."""
        return {
            "id": [self.id_emb.weight],
            "modality_tables": [t.weight for t in self.tables.values()],
            "modality_proj": [p for p in self.proj.parameters()] + (
                [p for p in self.fuse.parameters()] if hasattr(self, "fuse") else []),
        }


class ReprSeqModel(SeqRecModel):
    """Shared plumbing of backbones built on an :class:`ItemRepr`: subclasses implement only :meth:`encode`.

    Training: full-softmax cross-entropy at every non-padding position against the whole catalogue (the item table
    is computed once per step and used for both inputs and candidates). Scoring: the last position's hidden state
    against the same table.
    """

    items: ItemRepr

    def encode(self, input_ids: Tensor, table: Tensor) -> Tensor:
        """Hidden states ``[B, L, d]`` for left-padded ``input_ids [B, L]`` embedded through ``table``."""
        raise NotImplementedError

    output_loss = None  # a sampled / in-batch softmax (train.loss) instead of the full one

    def set_output_loss(self, loss) -> None:
        self.output_loss = loss

    def loss(self, batch: Batch) -> Tensor:
        table = self.items.table()
        h = self.encode(batch.input_ids, table)
        sel = batch.targets > 0
        if self.output_loss is not None:
            return self.output_loss(h[sel], table, batch.targets[sel], batch.input_ids, batch.targets)
        return catalogue_ce(h[sel], table, batch.targets[sel])

    def user_vectors(self, input_ids: Tensor, table: Tensor | None = None) -> Tensor:
        table = self.items.table() if table is None else table
        return self.encode(input_ids, table)[:, -1]

    def score_all(self, input_ids: Tensor) -> Tensor:
        table = self.items.table()
        return catalogue_logits(self.user_vectors(input_ids, table), table)

    def score_factors(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(user vectors [B, d], item table [N+1, d])`` with ``score_all = users @ table.T`` (column 0 = -inf):
        lets the evaluator rank a large catalogue in chunks."""
        table = self.items.table()
        return self.user_vectors(input_ids, table), table

    def item_representations(self) -> Tensor:
        return self.items.table()

    def modality_tables(self) -> dict[str, nn.Embedding]:
        return self.items.modality_tables()

    def modality_rows(self, m: str, ids: Tensor) -> Tensor:
        """The scored modality representation of items ``ids`` (:meth:`ItemRepr.modality_rows`; KDSR's CDL input)."""
        return self.items.modality_rows(m, ids)

    def id_table(self) -> nn.Embedding:
        return self.items.id_table()

    def param_groups(self, lr: float) -> list[dict]:
        """Groups named ``id``, ``modality_tables``, ``modality_proj`` and ``backbone`` (all at ``lr``), so a
        schedule (KDSR's asynchronous training) can address the modality tables by name."""
        by_role = self.items.param_groups()
        seen = {id(p) for ps in by_role.values() for p in ps}
        by_role["backbone"] = [p for p in self.parameters() if id(p) not in seen]
        return [{"params": [p for p in ps if p.requires_grad], "lr": lr, "name": name}
                for name, ps in by_role.items() if any(p.requires_grad for p in ps)]


class IDScoredModel(SeqRecModel):
    """Shared plumbing of the paper baselines that read frozen modality features (an :class:`ItemRepr`'s
    ``modality_vectors``) as side information but score against the ID table alone (FDSA, NOVA, DIF-SR, Trans2D):
    subclasses implement :meth:`encode`.

    Training: full-softmax cross-entropy at every position with a target (RecBole's CE on every prefix). Scoring:
    the last position's state against the ID table. Inputs: the frozen features of ``cfg.modalities``
    (:meth:`SeqRecModel.required_inputs`)."""

    items: ItemRepr

    def encode(self, input_ids: Tensor) -> Tensor:
        """States ``[B, L', d]`` of the last L' ≤ L positions of left-padded ``input_ids [B, L]``."""
        raise NotImplementedError

    def targeted_states(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(h [n, d], targets [n])``: the encoded states of the positions that have a target, and the targets."""
        h = self.encode(batch.input_ids)
        tgt = batch.targets[:, -h.shape[1]:]
        sel = tgt > 0
        return h[sel], tgt[sel]

    def loss(self, batch: Batch) -> Tensor | dict[str, Tensor]:
        h, tgt = self.targeted_states(batch)
        return catalogue_ce(h, self.items.id_emb.weight, tgt)

    def score_all(self, input_ids: Tensor) -> Tensor:
        return catalogue_logits(self.encode(input_ids)[:, -1], self.items.id_emb.weight)

    def item_representations(self) -> Tensor:
        return self.items.id_emb.weight
