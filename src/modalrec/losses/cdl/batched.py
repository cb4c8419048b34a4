"""Every modality at once: the trainable tables' rows of the batch's items with a sparse gradient
(:func:`table_rows`), and each modality's g_φ as one batched product (:func:`stacked_module`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def table_rows(weight: Tensor, ids: Tensor) -> Tensor:
    """``weight[ids]`` with a *sparse* gradient for the table: CDL touches a few hundred rows of an ``[N+1, d]``
    table, and a dense gradient would cost a zero-fill and an extra add of the whole table every step (the
    backbone's own dense gradient absorbs the sparse one). Should CDL be the table's only user in a backward pass,
    a hook turns the sparse gradient dense before the optimiser sees it."""
    if weight.requires_grad and not getattr(weight, "_cdl_densify", False):
        weight.register_post_accumulate_grad_hook(_densify_grad)
        weight._cdl_densify = True
    return F.embedding(ids, weight, sparse=True)


def _densify_grad(p: Tensor) -> None:
    if p.grad is not None and p.grad.is_sparse:
        p.grad = p.grad.to_dense()


def stacked_linear(x: Tensor, layers: list[nn.Linear]) -> Tensor:
    """``x [M, K, d_in]`` through ``layers[m]`` for each m, as one batched matrix product (``M`` separate
    ``nn.Linear`` modules keep their own parameters and state-dict keys)."""
    if len(layers) == 1:
        return layers[0](x[0]).unsqueeze(0)
    w = torch.stack([lin.weight for lin in layers]).transpose(1, 2)
    b = torch.stack([lin.bias for lin in layers]).unsqueeze(1)
    return torch.baddbmm(b, x, w)


def stacked_module(x: Tensor, mods: list[nn.Module]) -> Tensor:
    """``x [M, K, d]`` through each modality's g_φ (a Linear, or a Sequential of Linear layers), all modalities
    batched layer by layer."""
    for layer in zip(*[list(m) if isinstance(m, nn.Sequential) else [m] for m in mods]):
        x = stacked_linear(x, list(layer))
    return x
