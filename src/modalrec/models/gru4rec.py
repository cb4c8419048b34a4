"""GRU4Rec (Hidasi et al. 2016) in RecBole's form: item embedding -> dropout -> GRU -> linear map back to the item
space, scored against every item; trained here at every position with full-softmax cross-entropy.

Inputs are left-padded (contract) but a GRU must not read the padding: a zero input still moves the hidden state
(the gates have biases), so the same history would get a different vector depending on how much padding its batch
needed. The histories are therefore shifted to the right-padded layout and packed, and the outputs shifted back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .base import ModelContext, register_model
from .item_repr import ItemRepr, ReprSeqModel


def shift_index(lengths: Tensor, L: int, to_right_padded: bool) -> Tensor:
    """Gather index ``[B, L]`` converting left-padded rows to right-padded (or back)."""
    j = torch.arange(L, device=lengths.device).unsqueeze(0)
    off = (L - lengths).unsqueeze(1)
    return (j + off) % L if to_right_padded else (j - off) % L


@register_model("gru4rec")
class GRU4Rec(ReprSeqModel):
    @dataclass
    class Config:
        dim: int = 64  # item embedding size
        hidden: int = 128
        layers: int = 1
        dropout: float = 0.3
        item_repr: str = "id"
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        fusion: str = "sum"
        max_len: int | None = None

    def __init__(self, cfg: "GRU4Rec.Config", ctx: ModelContext):
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        self.items = ItemRepr(ctx.n_items, cfg.dim, cfg.item_repr, cfg.modalities, cfg.fusion, ctx.features,
                              ctx.compressed, key=f"models.{getattr(self, 'registry_name', 'gru4rec')}")
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, cfg.hidden, cfg.layers, batch_first=True, bias=True)
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def encode(self, input_ids: Tensor, table: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        B, L = input_ids.shape
        lengths = (input_ids > 0).sum(1).clamp(min=1)
        right = input_ids.gather(1, shift_index(lengths, L, True))
        x = self.drop(nn.functional.embedding(right, table))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=L)
        h = self.out(h)
        return h.gather(1, shift_index(lengths, L, False).unsqueeze(-1).expand(-1, -1, h.shape[-1]))
