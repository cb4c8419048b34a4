"""Round trip of the prepared-dataset writer / loader and its position helpers."""

import os
import stat

import numpy as np
import polars as pl
import pytest

from modalrec.data.prepared import load_prepared, write_prepared
from modalrec.errors import DataError
from modalrec.io import read_parquet_meta

SEQS = [[1, 2, 3, 4, 5], [3, 1, 2], [4, 4, 5, 1]]
NT, NV = [3, 1, 2], [1, 1, 1]


def _write(tmp_path, seqs=SEQS, nt=NT, nv=NV):
    n_items = 5
    rows = [(u, i, p) for u, s in enumerate(seqs) for p, i in enumerate(s)]
    inter = pl.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                          "timestamp": [None] * len(rows), "order": list(range(len(rows))),
                          "rating": [None] * len(rows), "user_orig": [f"u{r[0]}" for r in rows],
                          "item_orig": [f"i{r[1]}" for r in rows]})
    items = pl.DataFrame({"item": list(range(1, n_items + 1)), "item_orig": [f"i{i}" for i in range(1, n_items + 1)],
                          "title": ["a", None, "c", "d", "e"]})
    split = pl.DataFrame({"user": list(range(len(seqs))), "items": seqs, "n_train": nt, "n_valid": nv})
    meta = {"dataset": "toy", "filter": {}, "split": {"name": "loo"}}
    return write_prepared(tmp_path / "toy", inter, items, split, {"users": len(seqs)}, meta)


def test_round_trip(tmp_path):
    out = _write(tmp_path)
    p = load_prepared(out)
    assert p.n_items == 5 and p.n_users == 3
    assert [s.tolist() for s in p.sequences] == SEQS
    assert all(s.dtype == np.int32 for s in p.sequences)
    assert p.n_train.tolist() == NT and p.n_valid.tolist() == NV and p.n_test.tolist() == [1, 1, 1]
    assert p.split_meta["split"]["name"] == "loo"
    assert read_parquet_meta(out / "items.parquet")["text_fields"] == ["title"]
    assert p.items.columns[:2] == ["item", "item_orig"] and "image_bytes" in p.items.columns
    # train counts over items[:n_train]: [1,2,3] + [3] + [4,4]
    assert p.train_item_counts().tolist() == [0, 1, 1, 2, 2, 0]
    u, pos = p.instances("train")
    assert list(zip(u.tolist(), pos.tolist())) == [(0, 1), (0, 2), (2, 1)]
    u, pos = p.instances("valid")
    assert list(zip(u.tolist(), pos.tolist())) == [(0, 3), (1, 1), (2, 2)]
    assert p.targets(u, pos).tolist() == [4, 1, 5]
    u, pos = p.instances("test")
    assert pos.tolist() == [4, 2, 3] and p.targets(u, pos).tolist() == [5, 2, 1]
    assert p.history(0, 4, 2).tolist() == [3, 4]
    h = p.histories(u, pos, 3)
    assert h.tolist() == [[2, 3, 4], [0, 3, 1], [4, 4, 5]]
    assert (out / "stats.json").exists()


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_output_permissions_follow_umask(tmp_path, mask, dir_mode, file_mode):
    old = os.umask(mask)
    try:
        out = _write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {file_mode}


def test_rewrite_replaces_whole_dir(tmp_path):
    out = _write(tmp_path)
    (out / "stale.txt").write_text("x")
    _write(tmp_path)
    assert not (out / "stale.txt").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["toy"]


def test_bad_split_leaves_nothing(tmp_path):
    with pytest.raises(DataError):
        _write(tmp_path, nt=[5, 1, 2], nv=[1, 1, 1])  # n_train + n_valid > len
    assert list(tmp_path.iterdir()) == []


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="split.parquet"):
        load_prepared(tmp_path / "nope")
