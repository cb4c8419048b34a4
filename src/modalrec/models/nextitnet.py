"""NextItNet (Yuan et al., WSDM 2019) in RecBole's form: a stack of residual blocks of dilated causal 1-D
convolutions over the item embeddings, then a linear map back to the item space, scored against every item; trained
here, like the other backbones, at every position with full-softmax cross-entropy.

RecBole's ``NextItNet`` (``recbole/model/sequential_recommender/nextitnet.py``) uses residual block (b) of the paper:
``x + ReLU(LN(conv₂(ReLU(LN(conv₁(x))))))`` where conv₁ has dilation ``r`` and conv₂ dilation ``2r``, both of width
``kernel_size`` and both *causal*: the input is padded with ``(kernel_size - 1) · dilation`` zeros on the left only,
so the output at position ``t`` reads positions ``t, t - r, t - 2r, ...`` and never the future. The blocks' dilations
are ``dilations × blocks`` (RecBole: ``[1, 4] × 5``, kernel 3, 64 channels = the embedding size, LayerNorm eps 1e-8,
no dropout), and the user vector is the output at the last position through ``final_layer``.

Differences from RecBole, all deliberate:

- Histories are left-padded (contract). Padding positions are zeroed after every convolution, so a history gives
  the same output whatever the padding of its batch (the left zero-padding of a causal convolution and left-padded
  zeros are then the same thing). RecBole pads on the right and reads position ``-1``, which is padding for every
  history shorter than the maximum; here the last position is the newest item.
- RecBole's L2 term ``reg_weight`` (1e-5) is left out; the trainer's ``weight_decay`` plays that role.
- ``dropout`` (default 0, as RecBole) on the input embeddings, for parity of options with the other backbones.

:class:`NextItNetEncoder` (blocks + final layer on already-embedded inputs) is the reusable part: ODMT's
``user_encoder: nextitnet`` runs one per branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParamError
from .base import ModelContext, register_model
from .item_repr import ItemRepr, ReprSeqModel


def causal_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` over the time axis of ``x [B, L, C]`` with ``(k - 1) · dilation`` zeros prepended, so output ``t``
    depends on inputs ``t - j · dilation`` (j = 0..k-1) only: ``[B, L, C_out]``."""
    left = (conv.kernel_size[0] - 1) * conv.dilation[0]
    return conv(F.pad(x.transpose(1, 2), (left, 0))).transpose(1, 2)


class ResidualBlock(nn.Module):
    """RecBole's ``ResidualBlock_b``: two causal dilated convolutions (dilation ``r`` then ``2r``), each followed by
    LayerNorm and ReLU, plus the identity. ``keep [B, L, 1]`` zeroes padding positions after each convolution."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=2 * dilation)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        h = F.relu(self.ln1(causal_conv(self.conv1, x))) * keep
        h = F.relu(self.ln2(causal_conv(self.conv2, h))) * keep
        return h + x

    @property
    def reach(self) -> int:
        """How many positions back the block's output reads: ``(k - 1) · (r + 2r)``."""
        k, r = self.conv1.kernel_size[0], self.conv1.dilation[0]
        return (k - 1) * 3 * r


class NextItNetEncoder(nn.Module):
    """Residual blocks + ``final_layer`` on embedded, left-padded inputs ``[B, L, d]`` -> ``[B, L, d]`` (zeros at
    padding positions before the final layer)."""

    def __init__(self, dim: int, kernel_size: int = 3, dilations: list[int] | tuple[int, ...] = (1, 4),
                 blocks: int = 5):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualBlock(dim, kernel_size, r) for r in list(dilations) * blocks)
        self.final_layer = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.final_layer.weight)  # RecBole's init of its linear layers
        nn.init.constant_(self.final_layer.bias, 0.1)

    @property
    def reach(self) -> int:
        """Receptive field minus one: the output at ``t`` reads inputs ``t - reach .. t``."""
        return sum(b.reach for b in self.blocks)

    def forward(self, x: Tensor, pad: Tensor, last_only: bool = False) -> Tensor:
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        for blk in self.blocks:
            x = blk(x, keep)
        return self.final_layer(x[:, -1:] if last_only else x)


def check_config(cfg: "NextItNet.Config", key: str) -> None:
    if cfg.kernel_size < 1:
        raise ParamError(f"{key}.kernel_size", f"must be >= 1, got {cfg.kernel_size}")
    if not cfg.dilations or any(int(r) < 1 for r in cfg.dilations):
        raise ParamError(f"{key}.dilations", f"must be a non-empty list of integers >= 1, got {cfg.dilations}")
    if cfg.blocks < 1:
        raise ParamError(f"{key}.blocks", f"must be >= 1, got {cfg.blocks}")


@register_model("nextitnet")
class NextItNet(ReprSeqModel):
    @dataclass
    class Config:
        dim: int = 64  # embedding size = residual channels (RecBole: 64)
        kernel_size: int = 3
        dilations: list[int] = field(default_factory=lambda: [1, 4])  # one pass of the blocks' dilations
        blocks: int = 5  # repetitions of `dilations` (RecBole's block_num): 10 residual blocks by default
        dropout: float = 0.0  # on the input embeddings (RecBole: none)
        item_repr: str = "id"
        modalities: list[str] = field(default_factory=lambda: ["image", "text"])
        fusion: str = "sum"
        max_len: int | None = None

    def __init__(self, cfg: "NextItNet.Config", ctx: ModelContext):
        super().__init__()
        key = f"models.{getattr(self, 'registry_name', 'nextitnet')}"
        check_config(cfg, key)
        self.cfg = cfg
        self.max_len = cfg.max_len or ctx.max_len
        self.items = ItemRepr(ctx.n_items, cfg.dim, cfg.item_repr, cfg.modalities, cfg.fusion, ctx.features,
                              ctx.compressed, key=key)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = NextItNetEncoder(cfg.dim, cfg.kernel_size, cfg.dilations, cfg.blocks)

    def encode(self, input_ids: Tensor, table: Tensor) -> Tensor:
        input_ids = input_ids[:, -self.max_len:]
        x = self.drop(F.embedding(input_ids, table))
        return self.encoder(x, input_ids == 0)

    def user_vectors(self, input_ids: Tensor, table: Tensor | None = None) -> Tensor:
        table = self.items.table() if table is None else table
        input_ids = input_ids[:, -self.max_len:]
        return self.encoder(self.drop(F.embedding(input_ids, table)), input_ids == 0, last_only=True)[:, -1]
