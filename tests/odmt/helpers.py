"""Tiny hand-built inputs for ODMT tests: TokenCache-like objects with the encode stage's attributes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from modalrec.models.base import Batch, ModelContext


@dataclass
class FakeTokenCache:
    """Same attributes as ``modalrec.encode.cache.TokenCache``: fp16 tokens [N+1, T, d], bool mask [N+1, T]."""

    tokens: np.ndarray
    mask: np.ndarray
    meta: dict = field(default_factory=dict)


def token_cache(n_items: int, T: int, d: int, seed: int, ragged: bool = False) -> FakeTokenCache:
    rng = np.random.default_rng(seed)
    tok = rng.standard_normal((n_items + 1, T, d)).astype(np.float16)
    tok[0] = 0
    mask = np.ones((n_items + 1, T), dtype=bool)
    if ragged:  # text-like: a random number of valid tokens per item
        lengths = rng.integers(2, T + 1, size=n_items + 1)
        mask = np.arange(T)[None, :] < lengths[:, None]
        tok[~mask] = 0
    mask[0] = False
    tok.flags.writeable = False  # like the real memory-mapped cache: the model must never write into it
    mask.flags.writeable = False
    return FakeTokenCache(tok, mask, {"dim": d})


def context(n_items: int = 40, max_len: int = 6, d_text: int = 16, d_image: int = 12, seed: int = 0,
            same_width: bool = False) -> ModelContext:
    counts = torch.from_numpy(np.random.default_rng(seed).integers(1, 20, size=n_items + 1)).float()
    counts[0] = 0
    return ModelContext(n_items=n_items, max_len=max_len, item_counts=counts,
                        tokens={"text": token_cache(n_items, 5, d_text, seed + 1, ragged=True),
                                "image": token_cache(n_items, 4, d_text if same_width else d_image, seed + 2)})


def batch_from_windows(windows: list[list[int]], max_len: int) -> Batch:
    """Left-padded all-position batch of training windows (inputs = window[:-1], targets = window[1:])."""
    B = len(windows)
    inp = torch.zeros(B, max_len, dtype=torch.long)
    tgt = torch.zeros(B, max_len, dtype=torch.long)
    for b, w in enumerate(windows):
        w = w[-(max_len + 1):]
        n = len(w) - 1
        inp[b, max_len - n:] = torch.tensor(w[:-1])
        tgt[b, max_len - n:] = torch.tensor(w[1:])
    return Batch(input_ids=inp, targets=tgt, users=torch.arange(B))


def random_windows(n_users: int, n_items: int, seed: int, lo: int = 3, hi: int = 8) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, n_items + 1, size=int(rng.integers(lo, hi)))) for _ in range(n_users)]
