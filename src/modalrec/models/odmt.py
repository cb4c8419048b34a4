"""ODMT: ID-aware Multi-modal Transformer with online distillation (Ji et al., ACM MM 2023), and its ablations.

The model has three parts (paper Fig. 3, released code ``xyliugo/ODMT``; see paper-notes §3):

1. **Item tower** (:class:`ItemTower`). Frozen token-level features (text tokens, image patch tokens; fp16 caches
   memory-mapped from disk) are projected to ``d``; with ``tower: imt`` one Transformer runs over
   ``[text tokens; image tokens; ID token]`` whose attention mask lets the ID token read every token but stops text
   and image tokens from reading the ID token (``id_mask``), so the text and image item vectors stay ID-free.
   Each branch's output (text CLS, image CLS, ID) goes through its own two-layer LeakyReLU DNN. ``tower: separate``
   is the "w/o IMT" ablation and the SASRec+EF/LF baselines: one Transformer per modality and no ID token.
2. **User side**: one SASRec encoder per branch (ID, text, image) over that branch's item vectors.
3. **Objective**: the debiased in-batch softmax (``losses.inbatch``) per branch plus online distillation
   (``losses.online_distill``) with a ramp-up weight, or the late-fusion CE on the averaged logits (``objective:
   late_fusion`` = "w/o online distillation" = SASRec+LF).

Training positions: all positions of the left-padded window, as the released code does (its ``log_mask`` keeps every
valid input position, paper-notes §3.6); the engine's all-position :class:`~modalrec.models.base.Batch` is exactly that.

Scores at evaluation are the average of the branches' raw dot products (no popularity correction), and
:meth:`ODMT.score_branches` exposes each branch for per-branch metrics. The tower for all N items is computed in
chunks of ``tower_batch`` items once per evaluation and cached until the model goes back to training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ParamError
from ..losses.inbatch import build_candidates, inbatch_ce, inbatch_logits, log_popularity
from ..losses.online_distill import KD_FORMS, online_distillation, rampup_weight
from .base import Batch, ModelContext, SeqRecModel, register_model
from .sasrec import Block, SASRecEncoder

TOWERS = ("imt", "separate")
ID_INITS = ("avg", "text", "image", "random")
OBJECTIVES = ("online_distill", "late_fusion", "independent")
FUSIONS = ("late", "early")


def check_config(cfg: "ODMT.Config", key: str) -> None:
    """Validate option values (:class:`ODMT.Config`, at the end of the file), naming the offending
    ``models.<name>.<field>``."""
    choices = {"tower": TOWERS, "id_init": ID_INITS, "objective": OBJECTIVES, "kd_form": KD_FORMS,
               "fusion": FUSIONS}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ParamError(f"{key}.{name}", f"{getattr(cfg, name)!r} is not one of {list(allowed)}")
    bad = [m for m in cfg.modalities if m not in ("text", "image")]
    if bad or not cfg.modalities:
        raise ParamError(f"{key}.modalities", f"must be a non-empty subset of ['text', 'image'], got {cfg.modalities}")
    if cfg.d % cfg.tower_heads or cfg.d % cfg.user_heads:
        raise ParamError(f"{key}.d", f"{cfg.d} must be divisible by tower_heads and user_heads")
    if cfg.T <= 0:
        raise ParamError(f"{key}.T", f"temperature must be > 0, got {cfg.T}")
    if cfg.fusion == "early" and cfg.objective == "online_distill":
        raise ParamError(f"{key}.objective", "early fusion has a single branch: use 'independent'")
    needs = {"avg": {"text", "image"}, "text": {"text"}, "image": {"image"}}.get(cfg.id_init, set())
    if cfg.use_id and not needs <= set(cfg.modalities):
        raise ParamError(f"{key}.id_init", f"{cfg.id_init!r} needs the modalities it averages")


# ----------------------------------------------------------------------------------------------------------------
# Transformer pieces: the engine's blocks (models/sasrec.py), configured as in the released ODMT code: post-LN,
# ReLU feed-forward of width 4d. (The released code has bias-free attention projections and LayerNorm eps 1e-6;
# the engine's block has biases and eps 1e-5, a negligible difference we accept to share one implementation.)


def block(d: int, heads: int, dropout: float) -> Block:
    """A post-LN Transformer block whose ``forward(x, keep)`` takes any boolean mask ``[B, 1, S, S]``."""
    return Block(d, heads, dropout, ffn_mult=4, act="relu", norm_first=False)


class UserEncoder(nn.Module):
    """One SASRec user encoder (paper-notes §3.5): LayerNorm on the item vectors, then the engine's
    :class:`SASRecEncoder` (positions counted from the right, dropout, causal post-LN blocks).

    The released code normalises after adding positions, LN(x + pos); the engine adds positions inside its encoder,
    so here it is LN(x) + pos: the same function class.
    """

    def __init__(self, d: int, max_len: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.encoder = SASRecEncoder(d, max_len, layers, heads, dropout, ffn_mult=4, act="relu", norm_first=False)

    def forward(self, item_vecs: Tensor, input_ids: Tensor) -> Tensor:
        """``item_vecs [B, L, d]`` → user states ``[B, L, d]`` at every position (zeros at padding)."""
        return self.encoder(self.ln(item_vecs), input_ids == 0)


def dnn(d: int) -> nn.Sequential:
    """Per-branch head of Eq. 3: Linear → LeakyReLU → Linear."""
    return nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d))


# ----------------------------------------------------------------------------------------------------------------
# Item tower


def _cache_dim(cache: Any) -> int:
    return int(cache.tokens.shape[-1])


def has_cls_token(cache: Any) -> bool:
    """Whether token 0 of a cache is a global token (BERT [CLS], CLIP class token). The encode stage records
    ``meta["cls_token"]``; CNN patch grids (EfficientNet, ResNet) have none, and ODMT then uses the masked mean of
    the grid as the modality's global token. Caches without the key are taken to start with a CLS token."""
    return bool((getattr(cache, "meta", None) or {}).get("cls_token", True))


def cls_features(cache: Any, chunk: int = 1024) -> np.ndarray:
    """The raw global vectors ``[N+1, d_m]`` (float32) of a token cache, read chunk by chunk from the memory map:
    token 0 when it is a CLS token, else the masked mean of the tokens. Never a float copy of the whole cache."""
    n = cache.tokens.shape[0]
    out = np.zeros((n, _cache_dim(cache)), dtype=np.float32)
    cls = has_cls_token(cache)
    for s in range(0, n, chunk):
        if cls:
            out[s:s + chunk] = cache.tokens[s:s + chunk, 0, :]
        else:
            tok = cache.tokens[s:s + chunk].astype(np.float32)
            m = cache.mask[s:s + chunk].astype(np.float32)[..., None]
            out[s:s + chunk] = (tok * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return out


class ItemTower(nn.Module):
    """Branch item vectors for a set of item ids, read from the token caches on demand.

    ``forward(ids [U]) -> {branch: [U, d]}`` with branches ``text``/``image`` (those in ``modalities``) and ``id``.
    """

    def __init__(self, cfg: "ODMT.Config", ctx: ModelContext, key: str):
        super().__init__()
        self.cfg = cfg
        tokens = ctx.tokens or {}
        missing = [m for m in cfg.modalities if m not in tokens]
        if missing:
            raise ParamError(f"{key}.modalities", f"no token cache for {missing}: run the encode_{missing[0]}_tokens "
                                                  "stage (data/features/<ds>/<modality>_tokens.arrow)")
        self.caches = {m: tokens[m] for m in cfg.modalities}
        for m, c in self.caches.items():
            if c.tokens.shape[0] != ctx.n_items + 1:
                raise ParamError(f"{key}.modalities", f"{m} token cache has {c.tokens.shape[0]} rows, "
                                                      f"expected N+1 = {ctx.n_items + 1}")
        d = cfg.d
        self.proj = nn.ModuleDict({m: nn.Linear(_cache_dim(c), d) for m, c in self.caches.items()})
        self.in_drop = nn.Dropout(cfg.dropout)
        if cfg.tower == "imt":
            self.blocks = nn.ModuleList(block(d, cfg.tower_heads, cfg.dropout) for _ in range(cfg.tower_layers))
        else:
            self.mod_blocks = nn.ModuleDict({m: nn.ModuleList(block(d, cfg.tower_heads, cfg.dropout)
                                                              for _ in range(cfg.tower_layers))
                                             for m in cfg.modalities})
        self.branches = list(cfg.modalities) + (["id"] if cfg.use_id else [])
        self.heads = nn.ModuleDict({b: dnn(d) for b in self.branches})
        self.init_note = ""
        if cfg.use_id:
            table = self._id_init(ctx.n_items)
            self.id_emb = nn.Embedding(ctx.n_items + 1, table.shape[1], padding_idx=0)
            with torch.no_grad():
                self.id_emb.weight.copy_(table)
                self.id_emb.weight[0].zero_()
            self.id_proj = nn.Linear(table.shape[1], d)

    def _id_init(self, n_items: int) -> Tensor:
        """Initial ID table: raw CLS features (paper §3.2). ``avg`` needs equal text/image widths; when they differ
        (offline defaults: MiniLM 384 vs EfficientNet 1280) the paper's fallback, the concatenation, is used."""
        cfg = self.cfg
        if cfg.id_init == "random":
            w = torch.empty(n_items + 1, cfg.id_dim or cfg.d)
            nn.init.xavier_normal_(w)
            return w
        if cfg.id_init in ("text", "image"):
            return torch.from_numpy(cls_features(self.caches[cfg.id_init]))
        t, v = cls_features(self.caches["text"]), cls_features(self.caches["image"])
        if t.shape[1] == v.shape[1]:
            return torch.from_numpy((t + v) / 2)
        self.init_note = f"id_init avg: widths differ ({t.shape[1]} vs {v.shape[1]}), concatenated instead"
        return torch.from_numpy(np.concatenate([t, v], axis=1))

    def _tokens(self, m: str, ids: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Projected tokens ``[U, T', d]`` and key mask ``[U, T']`` of items ``ids``, global token first.

        Only these rows are read from the memory map and converted to float. Without a CLS token in the cache, the
        masked mean of the projected tokens is prepended as the global token (T' = T + 1).
        """
        idx = ids.cpu().numpy()
        cache = self.caches[m]
        tok = torch.from_numpy(np.ascontiguousarray(cache.tokens[idx])).to(device, non_blocking=True)
        mask = torch.from_numpy(np.ascontiguousarray(cache.mask[idx])).to(device, non_blocking=True)
        proj = self.proj[m]
        x = proj(tok.to(proj.weight.dtype))
        if not has_cls_token(cache):
            w = mask.unsqueeze(-1).to(x.dtype)
            glob = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)
            x = torch.cat([glob, x], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        mask = mask.clone()
        mask[:, 0] = True  # the global token is always a valid key (also for items without this modality)
        return x, mask

    def forward(self, ids: Tensor) -> dict[str, Tensor]:
        device = self.heads[self.branches[0]][0].weight.device
        ids = ids.to(device)
        feats = {m: self._tokens(m, ids, device) for m in self.cfg.modalities}
        out: dict[str, Tensor] = {}
        if self.cfg.tower == "imt":
            xs = [feats[m][0] for m in self.cfg.modalities]
            keys = [feats[m][1] for m in self.cfg.modalities]
            if self.cfg.use_id:
                xs.append(self.id_proj(self.id_emb(ids)).unsqueeze(1))
                keys.append(torch.ones(len(ids), 1, dtype=torch.bool, device=device))
            x = self.in_drop(torch.cat(xs, dim=1))
            key = torch.cat(keys, dim=1)  # [U, S]
            S = x.shape[1]
            keep = key.unsqueeze(1).expand(-1, S, -1).clone()  # [U, S(q), S(k)]
            if self.cfg.use_id and self.cfg.id_mask:
                keep[:, :-1, -1] = False  # modality tokens cannot attend to the ID token; the ID token sees all
            keep = keep.unsqueeze(1)
            for blk in self.blocks:
                x = blk(x, keep)
            start = 0
            for m in self.cfg.modalities:
                out[m] = x[:, start]  # the modality's CLS output
                start += feats[m][0].shape[1]
            if self.cfg.use_id:
                out["id"] = x[:, -1]
        else:
            for m in self.cfg.modalities:
                x, key = feats[m]
                x = self.in_drop(x)
                keep = key[:, None, None, :]
                for blk in self.mod_blocks[m]:
                    x = blk(x, keep)
                out[m] = x[:, 0]
            if self.cfg.use_id:
                out["id"] = self.id_proj(self.id_emb(ids))
        return {b: self.heads[b](out[b]) for b in self.branches}


# ----------------------------------------------------------------------------------------------------------------
# The model


@register_model("odmt")
class ODMT(SeqRecModel):
    """ODMT and every variant of it; see the module docstring. Branch order: modalities then ``id``."""

    @dataclass
    class Config:
        """Options of ODMT and of the variants built from it (Table 3 ablations, SASRec+EF, SASRec+LF)."""

        d: int = 64  # hidden size of tower and user encoders (paper: 768)
        modalities: list[str] = field(default_factory=lambda: ["text", "image"])  # token caches used
        use_id: bool = True  # False = "w/o ID": no ID token / ID branch
        tower: str = "imt"  # imt (one merged Transformer) | separate ("w/o IMT": one Transformer per modality)
        tower_layers: int = 2  # w/o IMT(1): separate with 2 layers; w/o IMT(2): separate with 1 layer
        tower_heads: int = 2
        id_mask: bool = True  # False = "w/o ID mask": modality tokens may attend to the ID token
        id_init: str = "avg"  # avg | text | image | random: initial ID table (raw CLS features, before projection)
        id_dim: int | None = None  # size of the ID table when id_init=random (default d)
        user_layers: int = 2
        user_heads: int = 2
        dropout: float = 0.1
        fusion: str = "late"  # late: one user encoder per branch; early: average the item vectors into one encoder
        objective: str = "online_distill"  # online_distill | late_fusion (CE on averaged logits) | independent (Σ CE)
        T: float = 0.5  # distillation temperature
        alpha: float = 20.0  # ramp-up length in epochs (< 1: constant weight alpha)
        kd_form: str = "soft_ce"  # soft_ce (released code) | kl (paper text)
        detach_teacher: bool = False  # released code: False (gradients flow into the teacher logits)
        debias: bool = True  # subtract log popularity from in-batch logits
        tower_batch: int = 256  # items per chunk when computing the tower for the whole catalogue

    def __init__(self, cfg: "ODMT.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'odmt')}"
        check_config(cfg, key)
        self.cfg = cfg
        self.n_items = ctx.n_items
        self.tower = ItemTower(cfg, ctx, key)
        self.branches = ["fused"] if cfg.fusion == "early" else list(self.tower.branches)
        self.users = nn.ModuleDict({b: UserEncoder(cfg.d, ctx.max_len, cfg.user_layers, cfg.user_heads, cfg.dropout)
                                    for b in self.branches})
        if ctx.item_counts is None and cfg.debias:
            raise ParamError(f"{key}.debias", "needs the training item counts (ModelContext.item_counts)")
        counts = ctx.item_counts if ctx.item_counts is not None else torch.ones(ctx.n_items + 1)
        self.register_buffer("log_pop", log_popularity(torch.as_tensor(counts)), persistent=False)
        self.kd_weight = rampup_weight(1, cfg.alpha)
        self._catalogue: dict[str, Tensor] | None = None
        self._pending: tuple[Tensor, dict[str, Tensor]] | None = None
        self.to(ctx.device)

    @classmethod
    def required_inputs(cls, cfg: "ODMT.Config") -> list[str]:
        """Only the token-level caches of the modalities used (the train stage memory-maps them)."""
        return [f"tokens/{m}" for m in cfg.modalities]

    # -- hooks -----------------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.kd_weight = rampup_weight(epoch, self.cfg.alpha)

    def train(self, mode: bool = True) -> "ODMT":
        self._catalogue = None  # item vectors change with the weights: recompute at the next evaluation
        self._pending = None
        return super().train(mode)

    # -- item side -------------------------------------------------------------------------------------------------
    def _branch_items(self, ids: Tensor) -> dict[str, Tensor]:
        """Branch item vectors of ``ids`` (non-zero ids); early fusion averages the branches into one."""
        reps = self.tower(ids)
        if self.cfg.fusion == "early":
            return {"fused": torch.stack(list(reps.values())).mean(dim=0)}
        return reps

    @torch.no_grad()
    def catalogue(self) -> dict[str, Tensor]:
        """Branch vectors of all items ``{branch: [N+1, d]}`` (row 0 zeros), computed in chunks and cached."""
        if self._catalogue is None or self.training:
            dev = self.log_pop.device
            ids = torch.arange(1, self.n_items + 1, device=dev)
            parts = [self._branch_items(ids[s:s + self.cfg.tower_batch])
                     for s in range(0, self.n_items, self.cfg.tower_batch)]
            cat = {b: torch.cat([torch.zeros(1, self.cfg.d, device=dev)] + [p[b].float() for p in parts])
                   for b in self.branches}
            if self.training:
                return cat
            self._catalogue = cat
        return self._catalogue

    def item_representations(self) -> Tensor:
        """``[N+1, n_branches·d]``: the branches side by side, so that a user vector made of the branches' user
        vectors side by side scores ``Σ_b`` (branch score), i.e. the ensemble up to the factor ``n_branches``."""
        return torch.cat([self.catalogue()[b] for b in self.branches], dim=1)

    # -- user side -------------------------------------------------------------------------------------------------
    def _encode(self, item_vecs: dict[str, Tensor], input_ids: Tensor) -> dict[str, Tensor]:
        return {b: self.users[b](item_vecs[b], input_ids) for b in self.branches}

    def _embed_sequence(self, input_ids: Tensor, table: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """Look up ``table[b][index]`` and zero the padding positions."""
        pad = (input_ids == 0).unsqueeze(-1)
        return {b: table[b][index].masked_fill(pad, 0.0) for b in self.branches}

    # -- training --------------------------------------------------------------------------------------------------
    def branch_logits(self, batch: Batch) -> tuple[dict[str, Tensor], Any]:
        """Debiased masked in-batch logits ``{branch: [Q, C]}`` and the candidate layout of the batch."""
        input_ids, targets = batch.input_ids, batch.targets
        cand = build_candidates(input_ids, targets)
        # the tower runs once per distinct item of the batch: sequence inputs and candidates share its output
        uniq, inverse = torch.unique(torch.cat([input_ids.reshape(-1), cand.col_items]), return_inverse=True)
        nonzero = uniq != 0
        reps = self._branch_items(uniq[nonzero])
        table = {}
        for b in self.branches:
            t = reps[b].new_zeros(len(uniq), reps[b].shape[1])
            t[nonzero] = reps[b]
            table[b] = t
        n_in = input_ids.numel()
        seq_index = inverse[:n_in].view_as(input_ids)
        col_index = inverse[n_in:]
        states = self._encode(self._embed_sequence(input_ids, table, seq_index), input_ids)
        d = self.cfg.d
        logits = {b: inbatch_logits(states[b].reshape(-1, d)[cand.query_index], table[b][col_index], cand,
                                    self.log_pop if self.cfg.debias else None)
                  for b in self.branches}
        return logits, cand

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        logits, cand = self.branch_logits(batch)
        out: dict[str, Tensor] = {}
        if self.cfg.objective == "late_fusion":
            ens = torch.stack(list(logits.values())).mean(dim=0)
            out["loss"] = out["ce"] = inbatch_ce(ens, cand)
            return out
        ces = {b: inbatch_ce(z, cand) for b, z in logits.items()}
        ce = torch.stack(list(ces.values())).sum()
        out.update({f"ce_{b}": v.detach() for b, v in ces.items()})
        out["ce"] = ce.detach()
        total = ce
        if self.cfg.objective == "online_distill" and len(logits) > 1:
            kds = online_distillation(logits, self.cfg.T, self.cfg.kd_form, self.cfg.detach_teacher)
            kd = torch.stack(list(kds.values())).sum()
            out.update({f"kd_{b}": v.detach() for b, v in kds.items()})
            out["kd"] = kd.detach()
            out["kd_weight"] = torch.tensor(self.kd_weight)
            total = total + self.kd_weight * kd
        out["loss"] = total
        return out

    # -- evaluation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _branch_scores(self, input_ids: Tensor) -> dict[str, Tensor]:
        """Raw (not debiased) scores ``{branch: [B, N+1]}`` at the last position; column 0 = -inf."""
        cat = self.catalogue()
        ids = input_ids.to(self.log_pop.device)
        states = self._encode(self._embed_sequence(ids, cat, ids), ids)
        scores = {}
        for b in self.branches:
            s = states[b][:, -1].float() @ cat[b].T
            s[:, 0] = -math.inf
            scores[b] = s
        return scores

    def score_branches(self, input_ids: Tensor) -> dict[str, Tensor]:
        """Per-branch scores for per-branch metrics (empty for the single-branch early fusion).

        The evaluator asks for :meth:`score_all` and then for the branches of the same batch: the branch scores
        computed for ``score_all`` are handed over once instead of being recomputed.
        """
        if len(self.branches) == 1:
            return {}
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is input_ids:
            return pending[1]
        return self._branch_scores(input_ids)

    def score_all(self, input_ids: Tensor) -> Tensor:
        """The ensemble: the average of the branches' raw scores (paper-notes §3.8)."""
        branches = self._branch_scores(input_ids)
        self._pending = (input_ids, branches)
        return torch.stack(list(branches.values())).mean(dim=0)
