"""Significance tests and per-unit values against hand computations."""

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from modalrec.errors import DataError, ParamError
from modalrec.io import write_parquet
from modalrec.report.aggregate import Run
from modalrec.report.significance import compare, load_ranks, paired_test, unit_values


def test_ttest_matches_hand_computation_df1():
    # d = [1, 2]: mean 1.5, sd 1/sqrt(2), t = 1.5 / (sd / sqrt(2)) = 3; df = 1 is Cauchy: p = 1 - 2/pi * atan(3)
    r = paired_test([1.0, 3.0], [0.0, 1.0], "ttest")
    assert r["statistic"] == pytest.approx(3.0)
    assert r["p"] == pytest.approx(1 - 2 / math.pi * math.atan(3.0))
    assert r["n"] == 2 and r["mean_diff"] == pytest.approx(1.5)


def test_ttest_sign_and_symmetry():
    a, b = [0.2, 0.4, 0.1, 0.5, 0.3], [0.1, 0.35, 0.15, 0.3, 0.2]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    r1, r2 = paired_test(a, b), paired_test(b, a)
    assert r1["statistic"] == pytest.approx(t) and r2["statistic"] == pytest.approx(-t)
    assert r1["p"] == pytest.approx(r2["p"])


def test_wilcoxon_exact_all_positive():
    # all n differences positive: W- = 0, the exact two-sided p is 2 / 2^n
    assert paired_test([2, 3, 4, 5, 6], [1, 1, 1, 1, 1], "wilcoxon")["p"] == pytest.approx(2 / 32)
    assert paired_test([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1], "wilcoxon")["p"] == pytest.approx(2 / 64)


def test_degenerate_samples():
    assert paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])["p"] == 1.0
    assert paired_test([0.2, 0.3, 0.4], [0.1, 0.2, 0.3])["p"] == 0.0  # constant non-zero difference
    assert math.isnan(paired_test([0.2], [0.1])["p"])
    with pytest.raises(ParamError, match="report.test"):
        paired_test([1, 2], [1, 2], "sign")


def test_unit_values_instances_and_users():
    ranks = pl.DataFrame({"user": [0, 0, 1, 1], "key": [3, 4, 3, 4], "rank": [0, 1, 9, 10]})
    inst = unit_values(ranks, "ndcg@10", "instance")
    expect = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0]
    assert inst["value"].to_list() == pytest.approx(expect)
    users = unit_values(ranks, "ndcg@10", "user").sort("user")
    assert users["value"].to_list() == pytest.approx([(expect[0] + expect[1]) / 2, (expect[2] + expect[3]) / 2])
    assert unit_values(ranks, "hr@10", "instance")["value"].to_list() == [1, 1, 1, 0]


def _run(tmp, model, seed, ranks, positions=None, write=True):
    d = tmp / model / f"s{seed}"
    d.mkdir(parents=True)
    n = len(ranks)
    if write:
        write_parquet(d / "per_user.parquet", pa.table({
            "user": pa.array(np.arange(n), pa.int32()),
            "position": pa.array(positions if positions is not None else np.full(n, 5), pa.int32()),
            "target": pa.array(np.arange(n) + 1, pa.int32()), "rank": pa.array(ranks, pa.int64())}))
    hr = float(np.mean(np.asarray(ranks) < 10))
    return Run("toy", model, seed, d, {}, {"hr@10": hr}, {})


def test_compare_averages_seeds_then_pairs_instances(tmp_path):
    a = [_run(tmp_path, "a", 1, [0, 0, 20, 3]), _run(tmp_path, "a", 2, [0, 20, 0, 3])]
    b = [_run(tmp_path, "b", 1, [20, 0, 20, 3]), _run(tmp_path, "b", 2, [20, 20, 20, 3]),
         _run(tmp_path, "b", 3, [0, 0, 0, 0])]  # seed 3 is not shared: ignored
    res = compare(a, b, "hr@10", "instance", "ttest")
    # per-instance HR@10 averaged over seeds 1,2: a = [1, .5, .5, 1], b = [0, .5, 0, 1]
    ref = paired_test([1, .5, .5, 1], [0, .5, 0, 1], "ttest")
    assert res["seeds"] == [1, 2] and res["units"] == "instances" and res["n"] == 4
    assert res["p"] == pytest.approx(ref["p"]) and res["statistic"] == pytest.approx(ref["statistic"])


def test_compare_falls_back_to_seeds_without_ranks(tmp_path):
    a = [_run(tmp_path, "a", s, r, write=False) for s, r in ((1, [0, 0]), (2, [0, 20]), (3, [0, 0]))]
    b = [_run(tmp_path, "b", s, r, write=False) for s, r in ((1, [20, 20]), (2, [0, 20]), (3, [20, 0]))]
    res = compare(a, b, "hr@10")
    assert res["units"] == "seeds" and res["n"] == 3
    assert res["p"] == pytest.approx(paired_test([1, .5, 1], [0, .5, .5])["p"])


def test_compare_rejects_different_test_sets(tmp_path):
    a = [_run(tmp_path, "a", 1, [0, 1, 2], positions=[5, 5, 5])]
    b = [_run(tmp_path, "b", 1, [0, 1, 2], positions=[6, 6, 6])]
    with pytest.raises(DataError, match="different test instances"):
        compare(a, b, "ndcg@10")


def test_load_ranks_errors_name_the_file(tmp_path):
    p = tmp_path / "per_user.parquet"
    write_parquet(p, pa.table({"user": [0], "score": [1.0]}))
    with pytest.raises(DataError, match="per_user.parquet.*'rank'"):
        load_ranks(p)
    p.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="per_user.parquet"):
        load_ranks(p)
