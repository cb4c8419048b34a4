"""MMSRec (Song et al., 2023): items as their frozen modality features only, fused by one Transformer over
(position x modality) tokens, trained by masked-item prediction against items encoded by the same network.

Follows the authors' fine-tuning code, kz-song/MMSRec (``model/fusion.py``: ``FusionEncoderForMaskedLM``;
``model/fusion_module.py``):

- **Items have no ID embedding.** Each modality's feature of an item (frozen: the code freezes its CLIP embedding
  tables) goes through its own Linear + LayerNorm (``FusionInputTransform``) to a ``dim`` token.
- A sequence of L items is ``L x M`` tokens; masked positions (and the slot being predicted) hold a learned [MASK]
  token in every modality; + position embedding (shared by an item's modalities) + modality-type embedding ->
  LayerNorm -> dropout (``FusionEmbedding``); one **bidirectional** Transformer over all ``L x M`` tokens, tokens of
  missing modalities and padding hidden (``FusionEncoder``); per modality Linear + LayerNorm and a **max over the
  modalities** present gives one vector per position (``FusionOutputTransform``).
- **Candidates** are every item run alone through the same network (``modality_embedding_hidden``); scores are the
  cosine of the [MASK] slot's vector and the candidates', divided by ``temperature`` in training.
- **Training** (``mlm``): each training window is the history plus its last target; positions are masked with
  probability ``mask_ratio`` (80/10/10: [MASK], a random item, unchanged — the code's replace and restore draws) and
  the last item always, and every masked position predicts its item (full-softmax CE over the catalogue).
  **Scoring** (``prediction``): the history followed by one [MASK] slot.

Differences from the code: no pre-training (the released WebVid checkpoint is 512-d CLIP ViT-B/32 and CLIP text,
not this project's encoders): the fusion network is trained from scratch; the modality vectors are the project's
cached features, standardised per dimension as in :class:`~modalrec.models.item_repr.ItemRepr`; RecBole-style
post-LN Transformer layers (the code's ``model/transformer.py`` is a standard encoder too); positions counted from the
newest slot (left padding), so a candidate alone sits at the [MASK] slot's position; an item with no modality at
all keeps a zero vector in its first modality (else it would have no token to attend to); the random replacements
are drawn from the whole catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import Batch, ModelContext, SeqRecModel, recbole_init, register_model
from .item_repr import modality_input, standardisation


class TransformerLayer(nn.Module):
    """Post-LN multi-head attention and GELU feed-forward (bidirectional; ``hide [B, T]`` = keys to ignore)."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.dense = nn.Linear(dim, dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, hide: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=~hide[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        x = self.ln1(x + self.drop(self.dense(y.transpose(1, 2).reshape(B, T, D))))
        return self.ln2(x + self.drop(self.ffn(x)))


@register_model("mmsrec")
class MMSRec(SeqRecModel):
    MASK = -1  # input code of a [MASK] slot (item ids are 0 = padding, 1..N)

    @dataclass
    class Config:
        dim: int = 64  # MMSRec Amazon fine-tuning: 512, 2 layers, 8 heads, max_seq 20
        layers: int = 2
        heads: int = 2
        inner: int = 256
        dropout: float = 0.2
        mask_ratio: float = 0.2  # the code's ce_mask_ratio
        temperature: float = 0.07  # the code's contrastive_temperature
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        max_len: int | None = None  # None = the data's max_len (ctx); the [MASK] slot adds one position

    def __init__(self, cfg: "MMSRec.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'mmsrec')}"
        if not cfg.modalities:
            raise ParamError(f"{key}.modalities", "MMSRec needs at least one modality (it has no ID embedding)")
        if not 0 <= cfg.mask_ratio < 1:
            raise ParamError(f"{key}.mask_ratio", f"must be in [0, 1), got {cfg.mask_ratio}")
        if cfg.temperature <= 0:
            raise ParamError(f"{key}.temperature", f"must be > 0, got {cfg.temperature}")
        self.cfg = cfg
        self.n_items = ctx.n_items
        self.max_len = cfg.max_len or ctx.max_len
        self.modalities = list(cfg.modalities)
        d = cfg.dim
        has_any = torch.zeros(ctx.n_items + 1, dtype=torch.bool)
        self.inp = nn.ModuleDict()
        for m in self.modalities:
            x, has = modality_input(ctx.features, m, ctx.n_items, key)
            mu, sd = standardisation(x, has)
            self.register_buffer(f"feat_{m}", (x - mu) / sd * has[:, None], persistent=False)  # frozen, ctx at load
            self.register_buffer(f"has_{m}", has, persistent=False)
            has_any |= has
            self.inp[m] = nn.Sequential(nn.Linear(x.shape[1], d), nn.LayerNorm(d))
        getattr(self, f"has_{self.modalities[0]}")[1:] |= ~has_any[1:]  # an item with no modality: a zero token
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.pos = nn.Embedding(self.max_len + 1, d)
        self.modal_type = nn.Embedding(len(self.modalities), d)
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.inner, cfg.dropout) for _ in range(cfg.layers))
        self.out = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for m in self.modalities})
        self.apply(recbole_init)

    def encode(self, codes: Tensor) -> Tensor:
        """Vectors ``[B, L, d]`` of left-padded slot codes ``[B, L]`` (0 padding, -1 [MASK], 1..N items)."""
        B, L = codes.shape
        items = codes.clamp(min=0)
        is_mask = codes == self.MASK
        tok = torch.stack([self.inp[m](getattr(self, f"feat_{m}")[items]) for m in self.modalities], 2)  # [B,L,M,d]
        tok = torch.where(is_mask[:, :, None, None], self.mask_token, tok)
        present = torch.stack([getattr(self, f"has_{m}")[items] for m in self.modalities], 2) | is_mask[:, :, None]
        pos = self.pos(torch.arange(self.max_len + 1 - L, self.max_len + 1, device=codes.device))
        x = self.drop(self.ln(tok + pos[None, :, None, :] + self.modal_type.weight[None, None]))
        M = len(self.modalities)
        h = x.reshape(B, L * M, -1)
        hide = ~present.reshape(B, L * M)
        for blk in self.layers:
            h = blk(h, hide)
        h = h.view(B, L, M, -1)
        y = torch.stack([self.out[m](h[:, :, i]) for i, m in enumerate(self.modalities)], 2)
        return y.masked_fill(~present[..., None], -1e4).max(2).values

    def candidates(self) -> Tensor:
        """Every item run alone through the network, L2-normalised: ``[N+1, d]`` (row 0 = 0)."""
        ids = torch.arange(self.n_items + 1, device=self.mask_token.device)[:, None]
        c = F.normalize(self.encode(ids)[:, 0], dim=-1)
        return c * (ids > 0)

    def loss(self, batch: Batch) -> Tensor:
        window = torch.cat([batch.input_ids, batch.targets[:, -1:]], 1)[:, -(self.max_len + 1):]
        real = window > 0
        masked = (torch.rand(window.shape, device=window.device) < self.cfg.mask_ratio) & real
        masked[:, -1] = True
        codes = window.masked_fill(masked, self.MASK)
        replace = masked & (torch.rand(window.shape, device=window.device) < 0.1)  # the code's 10% random items
        codes = torch.where(replace, torch.randint_like(window, 1, self.n_items + 1), codes)
        restore = masked & (torch.rand(window.shape, device=window.device) < 0.1)  # and 10% unchanged
        codes = torch.where(restore, window, codes)
        codes[:, -1] = self.MASK
        h = F.normalize(self.encode(codes)[masked], dim=-1)
        logits = h @ self.candidates().t() / self.cfg.temperature
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits.float(), window[masked])

    def score_all(self, input_ids: Tensor) -> Tensor:
        codes = torch.cat([input_ids[:, -self.max_len:], torch.full_like(input_ids[:, :1], self.MASK)], 1)
        s = F.normalize(self.encode(codes)[:, -1], dim=-1) @ self.candidates().t()
        s[:, 0] = float("-inf")
        return s

    def item_representations(self) -> Tensor:
        return self.candidates()
