"""Splits: KDSR's ratio rule, loo, loo_window; properties over random lengths (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modalrec.data.splits import SplitConfig, split_lengths, summary
from modalrec.errors import ParamError

lengths = st.lists(st.integers(1, 60), min_size=1, max_size=50).map(np.array)


def test_ratio_matches_kdsr():
    n = np.array([5, 9, 10, 2, 3, 1])
    nt, nv = split_lengths(n, SplitConfig("ratio"))
    split_idx = n - (n * 0.2).astype(int)          # KDSR: len - int(len*0.2)
    assert (nt + nv == split_idx).all()
    assert nv.tolist() == [1, 1, 1, 0, 1, 0]       # carve-out only when the train part has >= 3 items
    assert (n - nt - nv).tolist() == [1, 1, 2, 0, 0, 0]
    nt0, nv0 = split_lengths(n, SplitConfig("ratio", valid=0))
    assert (nv0 == 0).all() and (nt0 == split_idx).all()


def test_loo_and_window():
    n = np.array([1, 2, 3, 20])
    nt, nv = split_lengths(n, SplitConfig("loo"))
    assert nt.tolist() == [1, 1, 1, 18] and nv.tolist() == [0, 0, 1, 1]
    nt, nv = split_lengths(np.array([15, 4]), SplitConfig("loo_window", window=15))
    assert nt.tolist() == [13, 2] and nv.tolist() == [1, 1]
    assert SplitConfig("loo_window").keep_last == 15 and SplitConfig("loo").keep_last is None


@settings(max_examples=80, deadline=None)
@given(lengths, st.sampled_from(["ratio", "loo", "loo_window"]), st.sampled_from([0.1, 0.2, 0.5]),
       st.integers(0, 2))
def test_split_properties(n, name, ratio, valid):
    cfg = SplitConfig(name, test_ratio=ratio, valid=valid)
    if name == "loo_window":
        n = np.minimum(n, cfg.window)  # the prepare stage windows before splitting
    nt, nv = split_lengths(n, cfg)
    nte = n - nt - nv
    # every user accounted for, parts contiguous and in order (train < valid < test), nothing overlaps
    assert len(nt) == len(n) and (nt >= 1).all() and (nv >= 0).all() and (nte >= 0).all()
    assert (nt + nv + nte == n).all()
    # every valid/test target has a history inside the earlier parts only (no leakage: target p sees items[:p])
    s = summary(n, nt, nv)
    assert s["train_targets"] + s["valid_targets"] + s["test_targets"] == int((n - 1).sum())
    if name != "ratio":
        assert ((n >= 2) == (nte == 1)).all()
    else:
        assert (nte == (n * ratio).astype(int)).all()


def test_bad_split_params():
    with pytest.raises(ParamError, match="datasets.x.split.name"):
        SplitConfig.from_params({"name": "random"}, "datasets.x.split")
    with pytest.raises(ParamError, match="test_ratio"):
        SplitConfig.from_params({"test_ratio": 1.5})
    with pytest.raises(ParamError, match="split.windw"):
        SplitConfig.from_params({"windw": 3})


@settings(max_examples=60, deadline=None)
@given(lengths, st.sampled_from(["ratio", "loo", "loo_window"]))
def test_instances_partition_positions(n, name):
    """Train/valid/test targets of the loaded dataset are disjoint, cover positions 1..len-1 once, and are ordered
    train < valid < test within each user (a target never precedes an earlier part's target: no leakage)."""
    import polars as pl

    from modalrec.data.prepared import Prepared

    cfg = SplitConfig(name)
    if name == "loo_window":
        n = np.minimum(n, cfg.window)
    nt, nv = split_lengths(n, cfg)
    offsets = np.r_[0, np.cumsum(n)]
    flat = np.arange(1, offsets[-1] + 1, dtype=np.int32)
    p = Prepared(n_items=int(offsets[-1]), n_users=len(n), sequences=np.split(flat, offsets[1:-1]), n_train=nt,
                 n_valid=nv, items=pl.DataFrame(), split_meta={}, flat=flat, offsets=offsets)
    seen = {}
    for part in ("train", "valid", "test"):
        u, pos = p.instances(part)
        for a, b in zip(u.tolist(), pos.tolist()):
            assert (a, b) not in seen
            seen[(a, b)] = part
        assert np.array_equal(p.targets(u, pos), flat[offsets[u] + pos])
    assert set(seen) == {(a, b) for a in range(len(n)) for b in range(1, int(n[a]))}
    rank = {"train": 0, "valid": 1, "test": 2}
    for a in range(len(n)):
        parts = [rank[seen[(a, b)]] for b in range(1, int(n[a]))]
        assert parts == sorted(parts)
