"""Modality forgetting (KDSR Figure 1): does fine-tuning wash the encoder's knowledge out of the modality tables?

Per epoch, for a fixed random sample of item pairs (memory O(pairs), never N×N):

- ``forgetting/<m>_E_M``: Pearson correlation between the pairs' similarities under the *tuned* modality table E
  and under the original representation M (the AE codes m̃ the table was initialised from, or the encoder
  features). 1.0 at initialisation; a falling curve is forgetting. CDL should keep it high.
- ``forgetting/<m>_E_V``: the same between E and the ID embeddings V: how far E has drifted towards a pure
  collaborative (ID) space.
- ``forgetting/<m>_S_M``: for backbones that score with a transformed modality representation (an ItemRepr's
  standardised, projected rows, ``modality_rows``; what KDSR's CDL supervises by default): the Pearson correlation
  between the pairs' cosines in that representation and those of the *centred* m̃ (the teacher's geometry with
  ``kdsr.center``). The raw E_M above compares uncentred cosines, which sit near 1 for sigmoid codes.

:class:`ForgettingProbe` is the trainer's ``epoch_callback``: it returns these values and the trainer logs them to
dvclive, one plot per key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def sample_pairs(candidates: np.ndarray, n_pairs: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n_pairs`` random pairs (i ≠ j) of the item ids in ``candidates``, seeded."""
    if len(candidates) < 2:
        raise ValueError("need at least 2 items with the modality to measure forgetting")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(candidates), n_pairs)
    b = (a + rng.integers(1, len(candidates), n_pairs)) % len(candidates)  # never a == b
    return torch.as_tensor(candidates[a], dtype=torch.long), torch.as_tensor(candidates[b], dtype=torch.long)


@torch.no_grad()
def pair_cosine(X: Tensor, i: Tensor, j: Tensor, chunk: int = 65536) -> Tensor:
    """Cosine similarity of rows ``X[i]`` and ``X[j]`` (float32 on CPU), in chunks of pairs."""
    out = []
    for s in range(0, len(i), chunk):
        a = X[i[s:s + chunk].to(X.device)].float()
        b = X[j[s:s + chunk].to(X.device)].float()
        out.append(F.cosine_similarity(a, b, dim=-1, eps=1e-8).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else float("nan")


class ForgettingProbe:
    """Epoch callback ``(epoch, model, logs) -> {forgetting/...}`` for models exposing ``modality_tables()``."""

    def __init__(self, reference: dict[str, Tensor], n_pairs: int = 20000, seed: int = 0):
        self.pairs: dict[str, tuple[Tensor, Tensor]] = {}
        self.ref_sim: dict[str, Tensor] = {}
        self.ref_centred: dict[str, Tensor] = {}
        for m, M in reference.items():
            has_t = M.abs().sum(1) > 0
            has = has_t.cpu().numpy()
            has[0] = False
            i, j = sample_pairs(np.flatnonzero(has), n_pairs, seed)
            self.pairs[m] = (i, j)
            self.ref_sim[m] = pair_cosine(M, i, j)
            mu = M[has_t].float().mean(0, keepdim=True)
            self.ref_centred[m] = pair_cosine((M.float() - mu) * has_t.unsqueeze(1), i, j)

    def measure(self, model: Any) -> dict[str, float]:
        tables = model.modality_tables()
        V = model.id_table().weight
        out: dict[str, float] = {}
        for m, (i, j) in self.pairs.items():
            if m not in tables:
                continue
            s = pair_cosine(tables[m].weight, i, j)
            out[f"forgetting/{m}_E_M"] = pearson(s, self.ref_sim[m])
            out[f"forgetting/{m}_E_V"] = pearson(s, pair_cosine(V, i, j))
            rows = getattr(getattr(model, "backbone", model), "modality_rows", None)
            if rows is not None:
                with torch.no_grad():
                    S = rows(m, torch.arange(tables[m].weight.shape[0], device=tables[m].weight.device))
                out[f"forgetting/{m}_S_M"] = pearson(pair_cosine(S, i, j), self.ref_centred[m])
        return out

    def __call__(self, epoch: int, model: Any, logs: dict[str, float]) -> dict[str, float]:
        return self.measure(model)
