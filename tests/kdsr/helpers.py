"""Test helpers: a teacher given by explicit dense matrices (tiny N only), for hand computations of the losses."""

from __future__ import annotations

import torch
from torch import Tensor


class MatrixTeacher:
    """Teacher API (holistic / codes on item-id tensors) backed by explicit [N+1, N+1] matrices per modality."""

    def __init__(self, R: dict[str, Tensor], C: dict[str, Tensor], n_codes: int, xi: str = "cos"):
        self.R, self.C, self.n_codes, self.xi = R, C, n_codes, xi
        self.calls: list[int] = []

    def holistic(self, i: Tensor, j: Tensor, modality: str) -> Tensor:
        self.calls.append(i.numel())
        return self.R[modality][i, j]

    def codes(self, i: Tensor, j: Tensor, modality: str) -> Tensor:
        self.calls.append(i.numel())
        return self.C[modality][i, j]


def random_teacher(n_items: int, n_codes: int = 5, seed: int = 0, modalities=("image", "text")) -> MatrixTeacher:
    g = torch.Generator().manual_seed(seed)
    R, C = {}, {}
    for m in modalities:
        a = torch.rand(n_items + 1, n_items + 1, generator=g) * 2 - 1
        R[m] = (a + a.t()) / 2
        c = torch.randint(0, n_codes, (n_items + 1, n_items + 1), generator=g)
        C[m] = torch.triu(c) + torch.triu(c, 1).t()  # symmetric, like any real teacher
    return MatrixTeacher(R, C, n_codes)
