"""UniSRec (Hou et al., KDD 2022): item text through a parametric-whitening mixture-of-experts adaptor, into SASRec.

Follows RUCAIBox/UniSRec's ``unisrec.py`` (``PWLayer``, ``MoEAdaptorLayer``, the fine-tuning stages) on RecBole's
SASRec:

- **Parametric whitening** (one expert): ``PW_e(x) = W_e (dropout(x) - b_e)``, a learned centring ``b_e`` and a
  linear map ``W_e`` (no bias), ``d_in -> dim``.
- **MoE adaptor**: ``g = softmax(x W_g + noise)`` over ``n_experts`` experts, with noise ``N(0, 1) *
  (softplus(x W_n) + 0.01)`` in training only (UniSRec's noisy gating; ``W_g``, ``W_n`` start at 0, so the experts
  start equally weighted), and the item vector is ``sum_e g_e PW_e(x)``.
- **Item representation**: the adaptor's output plus an ID embedding (``use_id: true``, UniSRec's
  *transductive* fine-tuning) or the adaptor alone (``use_id: false``, *inductive*). ODMT added the image modality
  to UniSRec "leveraging its extensibility" without releasing it; here each modality has its own MoE adaptor and the
  item vector is the sum of the ID embedding and every modality's adaptor output (``modalities: [text]`` is the
  original UniSRec).
- **Sequence encoder**: RecBole's SASRec (item + position embedding -> LayerNorm -> dropout -> post-LN causal
  Transformer layers, GELU feed-forward of ``inner`` units); the same item table embeds the inputs and scores the
  candidates.
- **Scores**: cosine similarity of the L2-normalised sequence and item vectors divided by ``temperature`` (0.07),
  trained with full-softmax cross-entropy at every position.

Differences from UniSRec: no pre-training stage (no multi-domain corpus here; the paper's Table 2 in ODMT does not say
which checkpoint was fine-tuned), i.e. the adaptor is trained from scratch with the ID table, as UniSRec's
"w/o pre-training" variant; the features are the project's cached encoder vectors (MiniLM text / EfficientNet image,
not BERT CLS), each modality divided by its mean vector norm (one scalar) so that the experts' N(0, 0.02) weights
start from inputs of norm ~1 whatever the encoder's scale (the whitening itself stays learned); a modality an item
lacks contributes 0; positions are counted from the newest item (left padding, as :mod:`~modalrec.models.sasrec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import Batch, ModelContext, SeqRecModel, recbole_init, register_model
from ._transformer import TransformerLayer, attention_mask
from .item_repr import modality_input


class PWLayer(nn.Module):
    """One parametric-whitening expert: ``W (dropout(x) - b)``."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(d_in))
        self.lin = nn.Linear(d_in, d_out, bias=False)
        nn.init.normal_(self.lin.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.dropout(x) - self.bias)


class MoEAdaptor(nn.Module):
    """UniSRec's ``MoEAdaptorLayer``: a noisy softmax gate over parametric-whitening experts."""

    def __init__(self, n_experts: int, d_in: int, d_out: int, dropout: float = 0.0, noise: bool = True):
        super().__init__()
        self.noise = noise
        self.experts = nn.ModuleList(PWLayer(d_in, d_out, dropout) for _ in range(n_experts))
        self.w_gate = nn.Parameter(torch.zeros(d_in, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(d_in, n_experts))

    def gates(self, x: Tensor) -> Tensor:
        logits = x @ self.w_gate
        if self.noise and self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.w_noise) + 1e-2)
        return torch.softmax(logits, -1)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.stack([e(x) for e in self.experts], -2)  # [..., E, d_out]
        return (self.gates(x).unsqueeze(-1) * out).sum(-2)


@register_model("unisrec")
class UniSRec(SeqRecModel):
    @dataclass
    class Config:
        dim: int = 64  # UniSRec: 300 (hidden and adaptor output), 2 layers, 2 heads, inner 256, dropout 0.5 / 0.5
        layers: int = 2
        heads: int = 2
        inner: int = 256
        dropout: float = 0.5
        attn_dropout: float = 0.5
        n_experts: int = 8
        adaptor_dropout: float = 0.2
        temperature: float = 0.07
        use_id: bool = True  # transductive (ID + text) vs inductive (text only) fine-tuning
        modalities: list[str] = field(default_factory=lambda: ["text", "image"])
        max_len: int | None = None  # None = the data's max_len (ctx)

    def __init__(self, cfg: "UniSRec.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'unisrec')}"
        if not cfg.modalities:
            raise ParamError(f"{key}.modalities", "UniSRec needs at least one modality")
        if cfg.temperature <= 0:
            raise ParamError(f"{key}.temperature", f"must be > 0, got {cfg.temperature}")
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        d = cfg.dim
        self.modalities = list(cfg.modalities)
        self.id_emb = nn.Embedding(ctx.n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        if not cfg.use_id:
            self.id_emb.weight.requires_grad_(False)
            with torch.no_grad():
                self.id_emb.weight.zero_()
        self.adaptors = nn.ModuleDict()
        for m in self.modalities:
            x, has = modality_input(ctx.features, m, ctx.n_items, key)
            scale = x[has].norm(dim=1).mean().clamp(min=1e-6) if has.any() else torch.tensor(1.0)
            self.register_buffer(f"feat_{m}", x / scale, persistent=False)  # fixed input: ctx supplies it at load
            self.register_buffer(f"has_{m}", has.unsqueeze(1).float(), persistent=False)
            self.adaptors[m] = MoEAdaptor(cfg.n_experts, x.shape[1], d, cfg.adaptor_dropout)
        self.pos = nn.Embedding(self.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout).apply(recbole_init)
                                    for _ in range(cfg.layers))

    def table(self) -> Tensor:
        """Item vectors ``[N+1, d]``: ID embedding + each modality's MoE adaptor output (row 0 = 0)."""
        out = self.id_emb.weight
        for m in self.modalities:
            out = out + self.adaptors[m](getattr(self, f"feat_{m}")) * getattr(self, f"has_{m}")
        keep = torch.ones(out.shape[0], 1, dtype=out.dtype, device=out.device)
        keep[0] = 0
        return out * keep

    def encode(self, input_ids: Tensor, table: Tensor) -> Tensor:
        ids = input_ids[:, -self.max_len:]
        L = ids.shape[1]
        pos = self.pos(torch.arange(self.max_len - L, self.max_len, device=ids.device))
        x = self.drop(self.ln(F.embedding(ids, table) + pos))
        mask = attention_mask(ids == 0)
        for blk in self.layers:
            x = blk(x, mask)
        return x

    def logits(self, h: Tensor, table: Tensor) -> Tensor:
        s = F.normalize(h, dim=-1) @ F.normalize(table, dim=-1).t() / self.cfg.temperature
        s[:, 0] = float("-inf")
        return s

    def loss(self, batch: Batch) -> Tensor:
        table = self.table()
        h = self.encode(batch.input_ids, table)
        tgt = batch.targets[:, -h.shape[1]:]
        sel = tgt > 0
        return F.cross_entropy(self.logits(h[sel], table).float(), tgt[sel])

    def score_all(self, input_ids: Tensor) -> Tensor:
        table = self.table()
        return self.logits(self.encode(input_ids, table)[:, -1], table)

    def item_representations(self) -> Tensor:
        return self.table()
