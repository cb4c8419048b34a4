"""ODMT: ID-aware Multi-modal Transformer with online distillation (Ji et al., ACM MM 2023), and its ablations.

The model has three parts (paper Fig. 3, released code ``xyliugo/ODMT``; see paper-notes §3):

1. **Item tower** (:class:`ItemTower`). Frozen token-level features (text tokens, image patch tokens; fp16 caches
   memory-mapped from disk) are projected to ``d``; with ``tower: imt`` one Transformer runs over
   ``[text tokens; image tokens; ID token]`` whose attention mask lets the ID token read every token but stops text
   and image tokens from reading the ID token (``id_mask``), so the text and image item vectors stay ID-free.
   Each branch's output (text CLS, image CLS, ID) goes through its own two-layer LeakyReLU DNN. ``tower: separate``
   is the "w/o IMT" ablation and the SASRec+EF/LF baselines: one Transformer per modality and no ID token.
2. **User side**: one user encoder per branch (ID, text, image) over that branch's item vectors: SASRec as in the
   paper, or GRU4Rec / NextItNet (``user_encoder``, the paper's Fig. 5 "different backbones").
3. **Objective**: the debiased in-batch softmax (``losses.inbatch``) per branch plus online distillation
   (``losses.online_distill``) with a ramp-up weight, or the late-fusion CE on the averaged logits (``objective:
   late_fusion`` = "w/o online distillation" = SASRec+LF).

The fixes of issue 19 are options with the released code's behaviour as default (docs/odmt.md, "Fixes"): the ramp's
maximum ``kd_max_weight`` and its length as a fraction of the epoch cap ``ramp_fraction``; ``kd_form`` /
``detach_teacher``; the ID table from the text's sentence vector (``init_text_pool``) and standardised modalities
(``init_standardise``); in-batch negatives masked per user rather than per window (``user_mask``).

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
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from ..losses.inbatch import build_candidates, inbatch_ce, inbatch_logits, log_popularity
from ..losses.online_distill import KD_FORMS, online_distillation, rampup_weight
from ._dropout import _ReluDropout, dropout, dropped_positions
from .base import Batch, ModelContext, SeqRecModel, register_model
from .gru4rec import shift_index
from .nextitnet import NextItNetEncoder
from .sasrec import Block, SASRecEncoder

TOWERS = ("imt", "separate")
ID_INITS = ("avg", "text", "image", "random")
OBJECTIVES = ("online_distill", "late_fusion", "independent")
FUSIONS = ("late", "early")
USER_ENCODERS = ("sasrec", "gru4rec", "nextitnet")
USER_MASKS = ("window", "user")
TEXT_POOLS = ("cls", "sentence")


def check_config(cfg: "ODMT.Config", key: str) -> None:
    """Validate option values (:class:`ODMT.Config`, at the end of the file), naming the offending
    ``models.<name>.<field>``."""
    choices = {"tower": TOWERS, "id_init": ID_INITS, "objective": OBJECTIVES, "kd_form": KD_FORMS,
               "fusion": FUSIONS, "user_encoder": USER_ENCODERS, "user_mask": USER_MASKS,
               "init_text_pool": TEXT_POOLS}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ParamError(f"{key}.{name}", f"{getattr(cfg, name)!r} is not one of {list(allowed)}")
    bad = [m for m in cfg.modalities if m not in ("text", "image")]
    if bad or len(set(cfg.modalities)) < len(cfg.modalities):
        raise ParamError(f"{key}.modalities", f"must be a subset of ['text', 'image'], got {cfg.modalities}")
    if not cfg.modalities and not (cfg.use_id and cfg.id_init == "random"):  # [] = the ID-only SASRec
        raise ParamError(f"{key}.modalities", "[] (ID only) needs use_id: true and id_init: random")
    if cfg.d % cfg.tower_heads or cfg.d % cfg.user_heads:
        raise ParamError(f"{key}.d", f"{cfg.d} must be divisible by tower_heads and user_heads")
    if cfg.T <= 0:
        raise ParamError(f"{key}.T", f"temperature must be > 0, got {cfg.T}")
    if not cfg.kd_max_weight >= 0:
        raise ParamError(f"{key}.kd_max_weight", f"must be >= 0, got {cfg.kd_max_weight}")
    if cfg.ramp_fraction is not None and not 0 < cfg.ramp_fraction <= 1:
        raise ParamError(f"{key}.ramp_fraction", f"must be in (0, 1] or null, got {cfg.ramp_fraction}")
    if cfg.gru_layers < 1 or cfg.conv_blocks < 1 or cfg.conv_kernel < 1 or not cfg.conv_dilations:
        raise ParamError(f"{key}.user_encoder", "gru_layers, conv_blocks, conv_kernel must be >= 1 and "
                                                "conv_dilations non-empty")
    if cfg.fusion == "early" and cfg.objective == "online_distill":
        raise ParamError(f"{key}.objective", "early fusion has a single branch: use 'independent'")
    needs = {"avg": {"text", "image"}, "text": {"text"}, "image": {"image"}}.get(cfg.id_init, set())
    if cfg.use_id and not needs <= set(cfg.modalities):
        raise ParamError(f"{key}.id_init", f"{cfg.id_init!r} needs the modalities it averages")


# ----------------------------------------------------------------------------------------------------------------
# Transformer pieces: the engine's blocks (models/sasrec.py), configured as in the released ODMT code: post-LN,
# ReLU feed-forward of width 4d. (The released code has bias-free attention projections and LayerNorm eps 1e-6;
# the engine's block has biases and eps 1e-5, a negligible difference we accept to share one implementation.)
#
# The blocks keep the engine's parameters, but ODMT runs them through :func:`run_block` rather than
# ``Block.forward``: the same function, computed faster on CPU (docs/odmt.md, "Performance"; on other devices the
# dropouts are the fused ``F.dropout`` / SDPA kernels):
# - dropout (:func:`dropout`) draws only the dropped positions, as geometric gaps: about p·n random numbers instead
#   of n, the same distribution as ``nn.Dropout`` but another random stream (Bernoulli masks were a fifth of a step);
# - attention is the math of ``F.scaled_dot_product_attention`` written out when it has dropout, and SDPA's fused
#   kernel when it has none (evaluation), on an additive mask built once per forward;
# - ``rows``: only some query positions are computed (the tower's last block needs only its CLS and ID outputs, the
#   user encoder's last block at scoring only the last position); keys and values still cover every token.


def block(d: int, heads: int, dropout: float) -> Block:
    """A post-LN, ReLU, 4d-wide Transformer block (run by :func:`run_block`)."""
    return Block(d, heads, dropout, ffn_mult=4, act="relu", norm_first=False)


def attention_bias(keep: Tensor) -> Tensor:
    """Boolean "may attend" mask -> the additive mask of :func:`attention` (0 / -inf)."""
    return torch.zeros(keep.shape, device=keep.device).masked_fill_(~keep, -math.inf)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, p: float) -> Tensor:
    """``softmax(q kᵀ / √dh + bias)`` with dropout ``p``, times ``v``: ``q [B, H, Sq, dh]``, ``k, v [B, H, S, dh]``,
    ``bias`` broadcast to ``[B, H, Sq, S]``. Every query row must have a key with bias 0."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
    scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-2, -1)).add_(bias)
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, True), v)


def run_block(blk: Block, x: Tensor, bias: Tensor, rows: Tensor | None = None) -> Tensor:
    """What ``blk(x, mask)`` computes for a post-LN ReLU :class:`Block`, with the additive mask ``bias``
    ``[B, 1, S or 1, S]`` (:func:`attention_bias`); with ``rows`` (indices into S) only those query positions,
    ``[B, len(rows), d]``."""
    B, S, d = x.shape
    H = blk.attn.heads
    p = blk.attn.dropout if blk.training else 0.0
    w, b = blk.attn.qkv.weight, blk.attn.qkv.bias
    if rows is None:
        res = x
        q, k, v = F.linear(x, w, b).view(B, S, 3, H, d // H).permute(2, 0, 3, 1, 4)
    else:
        res = x.index_select(1, rows)
        q = F.linear(res, w[:d], b[:d]).view(B, len(rows), H, d // H).transpose(1, 2)
        k, v = F.linear(x, w[d:], b[d:]).view(B, S, 2, H, d // H).permute(2, 0, 3, 1, 4)
        bias = bias if bias.shape[2] == 1 else bias.index_select(2, rows)
    y = attention(q, k, v, bias, p).transpose(1, 2).reshape(B, res.shape[1], d)
    x = blk.ln1(res + dropout(blk.attn.out(y), p, blk.training))
    first, second = blk.ffn[0], blk.ffn[3]
    if p == 0.0:
        return blk.ln2(x + second(torch.relu(first(x))))
    hidden = first(x.view(-1, d))  # 2-d: a tensor of its own (not a view), which the ReLU may overwrite
    if x.device.type == "cpu":  # the dropout's 1/(1-p) goes into the second Linear's weight
        h, w = _ReluDropout.apply(hidden, dropped_positions(hidden.numel(), p, x.device)), second.weight / (1.0 - p)
    else:
        h, w = F.dropout(torch.relu(hidden), p, True), second.weight
    return blk.ln2(x + dropout(F.linear(h, w, second.bias).view_as(x), p, True))


class UserEncoder(nn.Module):
    """One SASRec user encoder (paper-notes §3.5): LayerNorm on the item vectors, then the engine's
    :class:`SASRecEncoder` (positions counted from the right, dropout, causal post-LN blocks), its steps run with
    :func:`run_block`.

    The released code normalises after adding positions, LN(x + pos); the engine adds positions inside its encoder,
    so here it is LN(x) + pos: the same function class.
    """

    def __init__(self, d: int, max_len: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.encoder = SASRecEncoder(d, max_len, layers, heads, dropout, ffn_mult=4, act="relu", norm_first=False)

    def forward(self, item_vecs: Tensor, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """``item_vecs [B, L, d]`` → user states ``[B, L, d]`` at every position (zeros at padding), or with
        ``last_only`` the last position's ``[B, 1, d]``: ``SASRecEncoder.forward``, step by step."""
        enc, L = self.encoder, input_ids.shape[1]
        if L > enc.max_len:
            raise ValueError(f"sequence of length {L} is longer than max_len={enc.max_len}")
        pad = input_ids == 0
        keep = (~pad).unsqueeze(-1).to(item_vecs.dtype)
        pos = enc.pos(torch.arange(enc.max_len - L, enc.max_len, device=item_vecs.device))
        x = dropout(self.ln(item_vecs) + pos, enc.drop.p, self.training) * keep
        bias = attention_bias(enc.attention_mask(pad))
        last = torch.tensor([L - 1], device=x.device) if last_only else None
        for i, blk in enumerate(enc.blocks):
            rows = last if i == len(enc.blocks) - 1 else None
            x = run_block(blk, x, bias, rows) * (keep if rows is None else keep[:, -1:])
        return enc.ln(x if last is None or len(enc.blocks) else x[:, -1:])


class GRUUserEncoder(nn.Module):
    """GRU4Rec as ODMT's user encoder (the paper's Fig. 5 "different backbones"): LayerNorm on the item vectors,
    dropout, a GRU of width ``d`` that never reads the padding (the histories are shifted to the right-padded layout
    and packed, as :mod:`modalrec.models.gru4rec` does), and a linear map back to the item space (GRU4Rec's output
    layer). States at every position ``[B, L, d]`` (at padding: the output layer's bias), or the last one."""

    def __init__(self, d: int, layers: int, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(d, d, layers, batch_first=True)
        self.out = nn.Linear(d, d)

    def forward(self, item_vecs: Tensor, input_ids: Tensor, last_only: bool = False) -> Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        B, L = input_ids.shape
        lengths = (input_ids > 0).sum(1).clamp(min=1)
        x = self.drop(self.ln(item_vecs))
        right = x.gather(1, shift_index(lengths, L, True).unsqueeze(-1).expand_as(x))
        packed = pack_padded_sequence(right, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=L)
        h = h.gather(1, shift_index(lengths, L, False).unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.out(h[:, -1:] if last_only else h)


class ConvUserEncoder(nn.Module):
    """NextItNet as ODMT's user encoder: LayerNorm on the item vectors, dropout, then
    :class:`~modalrec.models.nextitnet.NextItNetEncoder` (residual blocks of dilated causal convolutions, padding
    zeroed after every convolution, final linear layer)."""

    def __init__(self, d: int, kernel: int, dilations: list[int], blocks: int, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.encoder = NextItNetEncoder(d, kernel, dilations, blocks)

    def forward(self, item_vecs: Tensor, input_ids: Tensor, last_only: bool = False) -> Tensor:
        return self.encoder(self.drop(self.ln(item_vecs)), input_ids == 0, last_only)


def user_encoder(cfg: "ODMT.Config", max_len: int) -> nn.Module:
    """One branch's user encoder, chosen by ``cfg.user_encoder``; every kind maps item vectors ``[B, L, d]`` and
    ``input_ids [B, L]`` to states ``[B, L, d]`` (``last_only``: ``[B, 1, d]``)."""
    if cfg.user_encoder == "gru4rec":
        return GRUUserEncoder(cfg.d, cfg.gru_layers, cfg.dropout)
    if cfg.user_encoder == "nextitnet":
        return ConvUserEncoder(cfg.d, cfg.conv_kernel, list(cfg.conv_dilations), cfg.conv_blocks, cfg.dropout)
    return UserEncoder(cfg.d, max_len, cfg.user_layers, cfg.user_heads, cfg.dropout)


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
    return pooled_features(cache, "mean" if not has_cls_token(cache) else "first", chunk)


def pooled_features(cache: Any, pool: str, chunk: int = 1024) -> np.ndarray:
    """``[N+1, d_m]`` float32 vectors of a token cache: ``first`` = token 0; ``mean`` = the attention-masked mean of
    the tokens; ``sentence`` = that mean, L2-normalised, i.e. a sentence-transformers model's sentence vector
    (all-MiniLM-L6-v2: masked mean pooling + Normalize, over the cache's ``max_length`` tokens). Items without any
    valid token get zeros. Read chunk by chunk from the memory map."""
    n = cache.tokens.shape[0]
    out = np.zeros((n, _cache_dim(cache)), dtype=np.float32)
    for s in range(0, n, chunk):
        if pool == "first":
            out[s:s + chunk] = cache.tokens[s:s + chunk, 0, :]
            continue
        tok = cache.tokens[s:s + chunk].astype(np.float32)
        m = cache.mask[s:s + chunk].astype(np.float32)[..., None]
        v = (tok * m).sum(1) / np.maximum(m.sum(1), 1.0)
        if pool == "sentence":
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        out[s:s + chunk] = v
    return out


def standardise(x: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores over the items that have the feature (``has [N+1]``); other rows (padding, items
    without the modality) stay 0. Each dimension is divided by ``max(sd, 1e-3)``."""
    out = np.zeros_like(x)
    if has.sum() < 2:
        return out
    mu = x[has].mean(0)
    sd = np.maximum(x[has].std(0), 1e-3)
    out[has] = (x[has] - mu) / sd
    return out


class _ProjectFP16(torch.autograd.Function):
    """``Linear`` of frozen fp16 token rows ``tok [U, T, D]`` -> float32 ``[U, T, d]``, a few items at a time.

    Each chunk (2 MiB as float32) is converted into one reused buffer and multiplied while it is in cache, and
    converted again in the backward for the weight gradient, instead of a float32 copy of the whole block (100 MB for
    400 items' image tokens: page faults, a pass to write it, the copy kept for the backward). The forward gives the
    same values (row blocks of the same product); the weight gradient is summed chunk by chunk (rounding differs).
    The projection's step was twice as fast so."""

    CHUNK = 1 << 19  # elements

    @staticmethod
    def _chunks(tok: Tensor, weight: Tensor):
        U, T, D = tok.shape
        step = max(1, _ProjectFP16.CHUNK // (T * D))
        buf = torch.empty(min(U, step) * T, D, dtype=weight.dtype, device=weight.device)
        for s in range(0, U, step):
            rows = tok[s:s + step].reshape(-1, D)
            yield s, s + step, buf[:len(rows)].copy_(rows)

    @staticmethod
    def forward(ctx, tok: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        d = weight.shape[0]
        out = torch.empty(*tok.shape[:2], d, dtype=weight.dtype, device=weight.device)
        for s, e, x in _ProjectFP16._chunks(tok, weight):
            torch.addmm(bias, x, weight.t(), out=out[s:e].view(-1, d))
        ctx.save_for_backward(tok, weight)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor]:
        tok, weight = ctx.saved_tensors
        d = weight.shape[0]
        grad = grad.contiguous()
        gw = torch.zeros_like(weight)
        for s, e, x in _ProjectFP16._chunks(tok, weight):
            gw = torch.addmm(gw, grad[s:e].view(-1, d).t(), x)
        return None, gw, grad.view(-1, d).sum(0)


def project_tokens(proj: nn.Linear, tok: Tensor) -> Tensor:
    """``proj`` of fp16 token rows: chunked on CPU (:class:`_ProjectFP16`); elsewhere one ``Linear`` (under the
    trainer's autocast on CUDA)."""
    if tok.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
        return _ProjectFP16.apply(tok, proj.weight, proj.bias)
    return proj(tok.to(proj.weight.dtype))


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
        """Initial ID table from the modalities' global vectors (paper §3.2), before ``id_proj``.

        The vectors: token 0 of each cache (the released code: BERT [CLS], CLIP class token; for CNN grids the
        pooled vector the encode stage puts first), or for text with ``init_text_pool: sentence`` the model's
        sentence vector (masked mean + L2 norm: MiniLM's token 0 is not trained as a sentence summary). With
        ``init_standardise`` each modality is z-scored per dimension first (MiniLM hidden states and 1280-d
        EfficientNet activations differ in scale by an order of magnitude, so one of them dominated the raw
        concatenation) and, when concatenated, each modality's block is scaled to an equal share of the norm.
        ``avg`` needs equal widths; when they differ (offline defaults: MiniLM 384 vs EfficientNet 1280) the paper's
        fallback, the concatenation, is used."""
        cfg = self.cfg
        if cfg.id_init == "random":
            w = torch.empty(n_items + 1, cfg.id_dim or cfg.d)
            nn.init.xavier_normal_(w)
            return w
        mods = ["text", "image"] if cfg.id_init == "avg" else [cfg.id_init]
        feats = [self._init_features(m) for m in mods]
        if len(feats) == 1:
            return torch.from_numpy(feats[0])
        t, v = feats
        if t.shape[1] == v.shape[1]:
            return torch.from_numpy((t + v) / 2)
        self.init_note = f"id_init avg: widths differ ({t.shape[1]} vs {v.shape[1]}), concatenated instead"
        if cfg.init_standardise:  # equal squared norm per modality, unit variance per dimension overall
            total = t.shape[1] + v.shape[1]
            t, v = t * math.sqrt(total / (2 * t.shape[1])), v * math.sqrt(total / (2 * v.shape[1]))
        return torch.from_numpy(np.concatenate([t, v], axis=1))

    def _init_features(self, m: str) -> np.ndarray:
        """One modality's global vectors ``[N+1, d_m]`` for the ID initialisation (see :meth:`_id_init`)."""
        cache = self.caches[m]
        if m == "text" and self.cfg.init_text_pool == "sentence":
            x = pooled_features(cache, "sentence")
        else:
            x = cls_features(cache)
        if self.cfg.init_standardise:
            has = np.asarray(cache.mask).any(axis=1)
            has[0] = False
            x = standardise(x, has)
        x[0] = 0.0
        return x

    def _tokens(self, m: str, ids: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Projected tokens ``[U, T', d]`` and key mask ``[U, T']`` of items ``ids``, global token first.

        Only these rows are read from the memory map, and converted to float chunk by chunk (:func:`project_tokens`).
        Without a CLS token in the cache, the masked mean of the projected tokens is prepended as the global token
        (T' = T + 1).
        """
        idx = ids.cpu().numpy()
        cache = self.caches[m]
        tok = torch.from_numpy(np.ascontiguousarray(cache.tokens[idx])).to(device, non_blocking=True)
        mask = torch.from_numpy(np.ascontiguousarray(cache.mask[idx])).to(device, non_blocking=True)
        x = project_tokens(self.proj[m], tok)
        if not has_cls_token(cache):
            w = mask.unsqueeze(-1).to(x.dtype)
            glob = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0)
            x = torch.cat([glob, x], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        mask = mask.clone()
        mask[:, 0] = True  # the global token is always a valid key (also for items without this modality)
        return x, mask

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, bias: Tensor, rows: Tensor) -> Tensor:
        """The blocks over ``x [U, S, d]``; the last one computes only the query positions ``rows`` (without
        blocks, those positions of ``x``)."""
        if not len(blocks):
            return x.index_select(1, rows)
        for i, blk in enumerate(blocks):
            x = run_block(blk, x, bias, rows if i == len(blocks) - 1 else None)
        return x

    def forward(self, ids: Tensor) -> dict[str, Tensor]:
        device = self.heads[self.branches[0]][0].weight.device
        ids = ids.to(device)
        feats = {m: self._tokens(m, ids, device) for m in self.cfg.modalities}
        p = self.cfg.dropout
        out: dict[str, Tensor] = {}
        if self.cfg.tower == "imt":
            xs = [feats[m][0] for m in self.cfg.modalities]
            keys = [feats[m][1] for m in self.cfg.modalities]
            if self.cfg.use_id:
                xs.append(self.id_proj(self.id_emb(ids)).unsqueeze(1))
                keys.append(torch.ones(len(ids), 1, dtype=torch.bool, device=device))
            x = dropout(torch.cat(xs, dim=1), p, self.training)
            key = torch.cat(keys, dim=1)  # [U, S]
            S = x.shape[1]
            keep = key.unsqueeze(1).expand(-1, S, -1).clone()  # [U, S(q), S(k)]
            if self.cfg.use_id and self.cfg.id_mask:
                keep[:, :-1, -1] = False  # modality tokens cannot attend to the ID token; the ID token sees all
            bias = attention_bias(keep.unsqueeze(1))
            # the outputs: each modality's CLS position, then the ID token (the last block computes only these)
            starts = np.cumsum([0] + [feats[m][0].shape[1] for m in self.cfg.modalities]).tolist()
            names = list(self.cfg.modalities) + (["id"] if self.cfg.use_id else [])
            rows = torch.tensor(starts[:-1] + ([S - 1] if self.cfg.use_id else []), device=device)
            x = self._run(self.blocks, x, bias, rows)
            out = {name: x[:, i] for i, name in enumerate(names)}
        else:
            rows = torch.zeros(1, dtype=torch.long, device=device)
            for m in self.cfg.modalities:
                x, key = feats[m]
                out[m] = self._run(self.mod_blocks[m], dropout(x, p, self.training),
                                   attention_bias(key[:, None, None, :]), rows)[:, 0]
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
        id_init: str = "avg"  # avg | text | image | random: initial ID table (global features, before projection)
        init_text_pool: str = "cls"  # cls: text token 0 (released code) | sentence: masked mean + L2 (MiniLM's vector)
        init_standardise: bool = False  # z-score each modality per dimension before averaging / concatenating
        id_dim: int | None = None  # size of the ID table when id_init=random (default d)
        user_encoder: str = "sasrec"  # sasrec | gru4rec | nextitnet: each branch's user encoder (paper Fig. 5)
        user_layers: int = 2  # SASRec blocks
        user_heads: int = 2
        gru_layers: int = 1  # GRU4Rec layers (RecBole: 1)
        conv_dilations: list[int] = field(default_factory=lambda: [1, 4])  # NextItNet (RecBole: [1, 4] x 5, kernel 3)
        conv_blocks: int = 5
        conv_kernel: int = 3
        dropout: float = 0.1
        fusion: str = "late"  # late: one user encoder per branch; early: average the item vectors into one encoder
        objective: str = "online_distill"  # online_distill | late_fusion (CE on averaged logits) | independent (Σ CE)
        T: float = 0.5  # distillation temperature
        alpha: float = 20.0  # ramp-up length in epochs (< 1: constant weight alpha)
        ramp_fraction: float | None = None  # set: alpha = this fraction of the run's train.epochs (runs.resolve_run)
        wait_for_ramp: bool = False  # early stopping waits for the ramp's end + patience (runs.wait_for_ramp)
        kd_max_weight: float = 1.0  # the weight the ramp ends at (released code: 1)
        kd_form: str = "soft_ce"  # soft_ce (released code) | kl (paper text)
        detach_teacher: bool = False  # released code: False (gradients flow into the teacher logits)
        debias: bool = True  # subtract log popularity from in-batch logits
        user_mask: str = "window"  # window: a query's own window's items are not negatives (released code) | user:
        #                            the items of every window of its user in the batch (same with one window a user)
        tower_batch: int = 256  # items per chunk when computing the tower for the whole catalogue

    def __init__(self, cfg: "ODMT.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'odmt')}"
        check_config(cfg, key)
        self.cfg = cfg
        self.n_items = ctx.n_items
        self.tower = ItemTower(cfg, ctx, key)
        self.branches = ["fused"] if cfg.fusion == "early" else list(self.tower.branches)
        self.users = nn.ModuleDict({b: user_encoder(cfg, ctx.max_len) for b in self.branches})
        if ctx.item_counts is None and cfg.debias:
            raise ParamError(f"{key}.debias", "needs the training item counts (ModelContext.item_counts)")
        counts = ctx.item_counts if ctx.item_counts is not None else torch.ones(ctx.n_items + 1)
        self.register_buffer("log_pop", log_popularity(torch.as_tensor(counts)), persistent=False)
        self.kd_weight = rampup_weight(1, cfg.alpha, cfg.kd_max_weight)
        self._catalogue: dict[str, Tensor] | None = None
        self._pending: tuple[Tensor, dict[str, Tensor]] | None = None
        self.to(ctx.device)

    @classmethod
    def required_inputs(cls, cfg: "ODMT.Config") -> list[str]:
        """Only the token-level caches of the modalities used (the train stage memory-maps them)."""
        return [f"tokens/{m}" for m in cfg.modalities]

    # -- hooks -----------------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.kd_weight = rampup_weight(epoch, self.cfg.alpha, self.cfg.kd_max_weight)

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
    def _encode(self, item_vecs: dict[str, Tensor], input_ids: Tensor, last_only: bool = False) -> dict[str, Tensor]:
        return {b: self.users[b](item_vecs[b], input_ids, last_only) for b in self.branches}

    def _embed_sequence(self, input_ids: Tensor, table: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """Look up ``table[b][index]`` and zero the padding positions."""
        pad = (input_ids == 0).unsqueeze(-1)
        return {b: table[b][index].masked_fill(pad, 0.0) for b in self.branches}

    # -- training --------------------------------------------------------------------------------------------------
    def branch_logits(self, batch: Batch) -> tuple[dict[str, Tensor], Any]:
        """Debiased masked in-batch logits ``{branch: [Q, K]}`` (one column per distinct item of the batch) and the
        candidate layout of the batch (``losses.inbatch``)."""
        input_ids, targets = batch.input_ids, batch.targets
        cand = build_candidates(input_ids, targets, batch.users if self.cfg.user_mask == "user" else None)
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
            kds = online_distillation(logits, self.cfg.T, self.cfg.kd_form, self.cfg.detach_teacher, cand.mask,
                                      cand.log_count)
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
        states = self._encode(self._embed_sequence(ids, cat, ids), ids, last_only=True)
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
