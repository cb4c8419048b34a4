"""One collector for the metrics and report stages: the same runs (listed models, base.seeds) in both outputs, and
reports/metrics.json's key layout."""

import json
import shutil

import numpy as np
import pytest

from modalrec.errors import ParamError
from modalrec.io import read_json
from modalrec.report.collect import collect_runs, flat_metrics, proposed_models, reported_models, reported_seeds
from modalrec.stages import metrics as metrics_stage
from modalrec.stages.report import run as report_run

from .conftest import fixture_params


def _stale(root):
    """Outputs the run lists no longer name: a dropped model, and a seed no longer in base.seeds."""
    reports = root / "reports" / "toy"
    shutil.copytree(reports / "sasrec" / "s1", reports / "old_model" / "s1")
    shutil.copytree(reports / "sasrec" / "s1", reports / "sasrec" / "s9")
    shutil.copytree(reports / "sasrec" / "s1", reports / "sasrec" / "s_old")  # not a seed directory


def test_metrics_and_report_keep_the_same_runs(fixture_runs):
    _stale(fixture_runs)
    params = fixture_params()
    flat = read_json(metrics_stage.run(params, reports_root=fixture_runs / "reports"))
    summary = report_run(params, reports_dir=fixture_runs / "reports", models_dir=fixture_runs / "models",
                         data_dir=fixture_runs / "data", out_dir=fixture_runs / "out")
    in_summary = {(r["model"], r["seed"]) for r in summary["runs"]}
    in_metrics = {(k.split("/")[1], int(k.split("/")[2][1:])) for k in flat
                  if k.split("/")[2].startswith("s") and k.count("/") == 4}
    expected = {(m, s) for m in ("gru4rec", "sasrec", "kdsr_sasrec", "sasrec_lf", "odmt") for s in (1, 2, 3)}
    assert in_summary == in_metrics == expected
    assert {k.split("/")[1] for k in flat if k.endswith("/n_seeds")} == {m for m, _ in expected}
    assert not any("old_model" in k or "/s9/" in k for k in flat)
    # fewer seeds in params: both stages drop the others
    params = fixture_params(seeds=(2,))
    flat = read_json(metrics_stage.run(params, reports_root=fixture_runs / "reports"))
    assert flat["toy/sasrec/n_seeds"] == 1 and "toy/sasrec/s1/test/hr@10" not in flat


def test_flat_layout_means_over_seeds(fixture_runs):
    runs = collect_runs(fixture_params(), fixture_runs / "reports", ["toy"])
    flat = flat_metrics(runs)
    per_seed = [read_json(fixture_runs / "reports" / "toy" / "odmt" / f"s{s}" / "metrics.json") for s in (1, 2, 3)]
    assert flat["toy/odmt/n_seeds"] == 3
    assert flat["toy/odmt/test/hr@10"] == pytest.approx(np.mean([m["test"]["hr@10"] for m in per_seed]))
    assert flat["toy/odmt/test/id/hr@10"] == pytest.approx(np.mean([m["test"]["id/hr@10"] for m in per_seed]))
    assert flat["toy/odmt/valid/ndcg@10"] == pytest.approx(np.mean([m["valid"]["ndcg@10"] for m in per_seed]))
    assert flat["toy/odmt/s2/test/hr@10"] == per_seed[1]["test"]["hr@10"]
    # the per-model means (models sorted) come first, then every per-seed key in sorted order
    keys = list(flat)
    n_means = sum(1 for k in keys if k.count("/") < 4 or k.split("/")[2] in ("valid", "test"))
    assert keys[n_means:] == sorted(keys[n_means:])
    heads = [k.split("/")[1] for k in keys[:n_means] if k.endswith("/n_seeds")]
    assert heads == sorted(heads)
    assert json.loads(json.dumps(flat)) == flat


def test_run_lists_and_seeds():
    params = fixture_params()
    assert reported_models(params) == ["gru4rec", "sasrec", "kdsr_sasrec", "odmt", "sasrec_lf"]
    # sasrec_lf is arch odmt trained with late fusion: a baseline
    assert proposed_models(params) == ["kdsr_sasrec", "odmt"]
    assert reported_seeds(params) == [1, 2, 3]
    assert reported_seeds({"base": {"seeds": 7}}) == [7]
    for bad in (None, ["1"], [True]):
        with pytest.raises(ParamError, match="base.seeds"):
            reported_seeds({"base": {"seeds": bad}})
    with pytest.raises(ParamError, match="runs.models"):
        reported_models({"runs": {"models": []}})
