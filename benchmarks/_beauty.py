"""Beauty's user_sequence.txt (../shared), shared by the benchmark scripts: one line per user, original item ids."""

from pathlib import Path

import numpy as np

BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon2014-beauty-seq" / "Beauty" / \
    "user_sequence.txt"


def load_beauty() -> tuple[list[np.ndarray], int]:
    """Every user's chronological sequence as item ids 1..N (in order of first appearance) and N."""
    index: dict[str, int] = {}
    seqs = []
    for line in BEAUTY.read_text().splitlines():
        parts = line.split()
        seqs.append(np.asarray([index.setdefault(a, len(index) + 1) for a in parts[1:]], dtype=np.int64))
    return seqs, len(index)
