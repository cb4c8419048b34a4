"""Aggregation over seeds, best baseline / best model, relative improvement, protocol grouping."""

import json
import statistics
from pathlib import Path

import pytest

from modalrec.errors import DataError
from modalrec.report.aggregate import Run, build_tables, describe_protocol, mean_std
from modalrec.report.collect import discover_runs

P_INST = {"ranking": "full", "mask_history": False, "aggregate": "instance", "select_on": "valid"}
P_USER = {"ranking": "full", "mask_history": True, "aggregate": "user", "select_on": "valid"}


def run(model, seed, ndcg, proto=P_INST, **extra):
    return Run("toy", model, seed, Path("."), {**proto, "seed": seed}, {"ndcg@10": ndcg, **extra}, {})


def test_mean_std_is_sample_std():
    m, s = mean_std([0.1, 0.2, 0.4])
    assert m == pytest.approx(0.7 / 3) and s == pytest.approx(statistics.stdev([0.1, 0.2, 0.4]))
    assert mean_std([0.3]) == (0.3, 0.0)


def test_best_baseline_best_model_and_improvement():
    runs = [run("gru4rec", 1, 0.10), run("gru4rec", 2, 0.12),
            run("sasrec", 1, 0.20), run("sasrec", 2, 0.22),
            run("kdsr", 1, 0.25), run("kdsr", 2, 0.27)]
    (t,) = build_tables(runs, proposed=["kdsr"], metrics=["ndcg"], ks=[10], order=["gru4rec", "sasrec", "kdsr"])
    assert t.models == ["gru4rec", "sasrec", "kdsr"] and t.proposed == ["kdsr"]
    assert t.cells["sasrec"]["ndcg@10"].mean == pytest.approx(0.21)
    assert t.cells["sasrec"]["ndcg@10"].std == pytest.approx(statistics.stdev([0.20, 0.22]))
    assert t.best_baseline["ndcg@10"] == "sasrec" and t.best_model["ndcg@10"] == "kdsr"
    assert t.improvement["kdsr"]["ndcg@10"] == pytest.approx((0.26 - 0.21) / 0.21)
    assert not t.warnings


def test_protocols_split_into_tables_or_warn():
    runs = [run("sasrec", 1, 0.2), run("kdsr", 1, 0.3), run("sasrec_lf", 1, 0.4, P_USER), run("odmt", 1, 0.5, P_USER)]
    tables = build_tables(runs, proposed=["kdsr", "odmt"], metrics=["ndcg"], ks=[10])
    assert [sorted(t.models) for t in tables] == [["kdsr", "sasrec"], ["odmt", "sasrec_lf"]] or \
           [sorted(t.models) for t in tables] == [["odmt", "sasrec_lf"], ["kdsr", "sasrec"]]
    assert all(not t.warnings for t in tables)
    (mixed,) = build_tables(runs, proposed=["kdsr", "odmt"], metrics=["ndcg"], ks=[10], split_protocols=False)
    assert any("different protocols" in w for w in mixed.warnings)
    assert mixed.best_baseline["ndcg@10"] == "sasrec_lf"


def test_seed_and_run_keys_do_not_split_protocols():
    runs = [run("sasrec", 1, 0.2, {**P_INST, "selected_epoch": 3, "ks": [10]}),
            run("sasrec", 2, 0.3, {**P_INST, "selected_epoch": 7, "ks": [10, 20]})]
    (t,) = build_tables(runs, proposed=[], metrics=["ndcg"], ks=[10])
    assert t.seeds["sasrec"] == [1, 2] and not t.warnings


def test_branch_metrics_are_kept_apart():
    runs = [run("odmt", 1, 0.3, P_USER, **{"id/ndcg@10": 0.2, "text/ndcg@10": 0.25})]
    (t,) = build_tables(runs, proposed=["odmt"], metrics=["ndcg"], ks=[10])
    assert t.metrics == ["ndcg@10"]
    assert t.branches["odmt/id"]["ndcg@10"].mean == pytest.approx(0.2)


def test_describe_protocol_states_the_switches():
    s = describe_protocol({**P_USER, "split": "loo", "select_on": "test_max"})
    assert "history masked" in s and "mean over users" in s and "paper parity" in s and "split loo" in s


def test_discover_filters_and_names_bad_files(tmp_path):
    for m, s in (("sasrec", 1), ("sasrec", 2), ("old", 1)):
        d = tmp_path / "toy" / m / f"s{s}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"protocol": {}, "test": {"hr@10": 0.5}}))
    runs = discover_runs(tmp_path, ["toy"], ["sasrec"], [1, 2, 3])
    assert [(r.model, r.seed) for r in runs] == [("sasrec", 1), ("sasrec", 2)]
    (tmp_path / "toy" / "sasrec" / "s2" / "metrics.json").write_text('{"test": {"hr@10": 0.5},\n "x": }')
    with pytest.raises(DataError, match=r"s2/metrics.json:2"):
        discover_runs(tmp_path)
    (tmp_path / "toy" / "sasrec" / "s2" / "metrics.json").write_text('{"test": {"hr@10": "high"}}')
    with pytest.raises(DataError, match="not a number"):
        discover_runs(tmp_path)
