"""Train / valid / test boundaries per user (``n_train``, ``n_valid``; n_test = len - n_train - n_valid).

All splits are *temporal within a user*: the sequence is never reordered, targets at later positions are never in an
earlier part, and every evaluation target is scored with its true (teacher-forced) history ``items[:p]``.

- ``ratio`` (KDSR, ``preprocess/*/process_dataset.py``): ``split_idx = len - int(len * test_ratio)``; every item of
  the tail ``items[split_idx:]`` is a test target. KDSR has no validation split; ours carves ``valid`` items (default
  1, the last train item) out of the train part **when the train part has at least 3 items** (so at least 2 train
  items, i.e. one training target, remain). With core-5 and test_ratio 0.2 every user has >= 1 test item.
- ``loo``: test = last item, valid = second-to-last (when len >= 3), train = the rest.
- ``loo_window`` (ODMT): the prepare stage first keeps each user's last ``window`` items (15 = max_len 12 + 3) and then
  applies ``loo``. The windowing happens before re-indexing (items that occur only outside every window disappear,
  as in ODMT's ``load_data.py``), so the sequences stored in ``split.parquet`` are the windowed ones.

Users too short for a part simply have no target there (a 1-item user has only n_train = 1 and contributes nothing);
they stay in the table so every user is accounted for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ParamError
from ..params import dataclass_from

SPLITS = ("ratio", "loo", "loo_window")


@dataclass
class SplitConfig:
    name: str = "ratio"
    test_ratio: float = 0.2   # ratio only
    valid: int = 1            # ratio only: items carved from the end of the train part for validation
    window: int = 15          # loo_window only

    @classmethod
    def from_params(cls, d: dict[str, Any] | None, key: str = "split") -> "SplitConfig":
        cfg = dataclass_from(cls, d, key, "split option")
        if cfg.name not in SPLITS:
            raise ParamError(f"{key}.name", f"must be one of {SPLITS}, got {cfg.name!r}")
        if not isinstance(cfg.test_ratio, (int, float)) or not 0 < cfg.test_ratio < 1:
            raise ParamError(f"{key}.test_ratio", f"must be in (0, 1), got {cfg.test_ratio!r}")
        if not isinstance(cfg.valid, int) or cfg.valid < 0:
            raise ParamError(f"{key}.valid", f"must be an integer >= 0, got {cfg.valid!r}")
        if not isinstance(cfg.window, int) or cfg.window < 3:
            raise ParamError(f"{key}.window", f"must be an integer >= 3, got {cfg.window!r}")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        """The parameters that matter for this split (recorded in split.parquet metadata and stats.json)."""
        d = asdict(self)
        if self.name == "ratio":
            d.pop("window")
        else:
            d.pop("test_ratio")
            d.pop("valid")
            if self.name == "loo":
                d.pop("window")
        return d

    @property
    def keep_last(self) -> int | None:
        """The per-user window the prepare stage must apply before re-indexing (loo_window), else None."""
        return self.window if self.name == "loo_window" else None


def split_lengths(lengths: np.ndarray, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(n_train, n_valid)`` int32 arrays for sequences of the given lengths (vectorised)."""
    n = np.asarray(lengths, dtype=np.int64)
    if (n < 1).any():
        raise ValueError("every sequence must have at least one item")
    if cfg.name == "ratio":
        split_idx = n - (n * cfg.test_ratio).astype(np.int64)  # KDSR: len - int(len*0.2)
        split_idx = np.maximum(split_idx, 1)
        n_valid = np.where(split_idx >= 3, np.minimum(cfg.valid, split_idx - 2), 0)
        n_train = split_idx - n_valid
    else:  # loo, loo_window (the window is applied upstream)
        if cfg.name == "loo_window":
            n = np.minimum(n, cfg.window)
        n_test = (n >= 2).astype(np.int64)
        n_valid = (n >= 3).astype(np.int64)
        n_train = n - n_test - n_valid
    return n_train.astype(np.int32), n_valid.astype(np.int32)


def summary(lengths: np.ndarray, n_train: np.ndarray, n_valid: np.ndarray) -> dict[str, int]:
    """Instance counts per part (train targets are positions 1..n_train-1)."""
    n = np.asarray(lengths, np.int64)
    nt, nv = np.asarray(n_train, np.int64), np.asarray(n_valid, np.int64)
    nte = n - nt - nv
    return {"train_targets": int(np.maximum(nt - 1, 0).sum()), "valid_targets": int(nv.sum()),
            "test_targets": int(nte.sum()), "users_with_valid": int((nv > 0).sum()),
            "users_with_test": int((nte > 0).sum())}
