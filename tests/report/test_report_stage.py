"""The report stage end to end on a fixture set of metrics files, ranks and dvclive logs."""

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from modalrec.errors import DataError, ParamError
from modalrec.io import read_json
from modalrec.report.plots import popularity_groups, read_dvclive, sweep_points
from modalrec.stages.report import run

from .conftest import fixture_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exps(values):
    """`dvc exp show --json` output (the layout DVC 3 prints) for kdsr.D sweeps."""
    def data(d, v):
        return {"params": {"params.yaml": {"data": {"kdsr": {"D": d}}}},
                "metrics": {"reports/metrics.json": {"data": {"toy/kdsr_sasrec/test/ndcg@10": v}}}}
    (d0, v0), *rest = values
    return [{"rev": "workspace", "name": None, "data": data(d0, v0), "experiments": None},
            {"rev": "abc", "name": "main", "data": data(d0, v0),
             "experiments": [{"revs": [{"rev": f"r{i}", "name": f"exp-{i}", "data": data(d, v), "experiments": None}]}
                             for i, (d, v) in enumerate(rest)]}]


def _run(root: Path, params=None, **kw):
    return run(params or fixture_params(), reports_dir=root / "reports", models_dir=root / "models",
               data_dir=root / "data", out_dir=root / "out", **kw)


def test_summary_tables_match_the_metrics_files(fixture_runs):
    summary = _run(fixture_runs)
    md = (fixture_runs / "out" / "summary.md").read_text()
    t1 = next(t for t in summary["tables"] if "kdsr_sasrec" in t["models"])
    assert t1["models"] == ["gru4rec", "sasrec", "kdsr_sasrec"]
    vals = [read_json(fixture_runs / "reports" / "toy" / "sasrec" / f"s{s}" / "metrics.json")["test"]["ndcg@10"]
            for s in (1, 2, 3)]
    cell = t1["values"]["sasrec"]["ndcg@10"]
    assert cell["mean"] == pytest.approx(np.mean(vals)) and cell["std"] == pytest.approx(statistics.stdev(vals))
    assert t1["best_baseline"]["ndcg@10"] == "sasrec" and t1["best_model"]["ndcg@10"] == "kdsr_sasrec"
    kd = t1["values"]["kdsr_sasrec"]["ndcg@10"]["mean"]
    assert t1["improvement"]["kdsr_sasrec"]["ndcg@10"] == pytest.approx((kd - cell["mean"]) / cell["mean"])
    sig = t1["significance"]["kdsr_sasrec"]["ndcg@10"]
    assert sig["p"] < 0.05 and sig["units"] == "instances" and sig["seeds"] == [1, 2, 3] and sig["baseline"] == "sasrec"
    # the markdown: protocol line, underlined best baseline, bold + dagger best model, improvement column
    assert "**Protocol**" in md and "history not masked" in md and "history masked" in md
    row = next(l for l in md.splitlines() if l.startswith("| NDCG@10 |") and "%" in l and "†" in l)
    assert re.search(r"<u>[\d.]+ ± [\d.]+</u>", row) and re.search(r"\*\*[\d.]+ ± [\d.]+\*\*†", row)
    # ODMT is worse than its baseline here: no dagger on its table, and it is in its own (user, masked) table
    t2 = next(t for t in summary["tables"] if "odmt" in t["models"])
    assert t2["protocol"]["aggregate"] == "user" and t2["metrics"][0] == "hr@10"
    assert "odmt/id" in t2["branches"]


def test_every_plot_is_a_nonempty_png_linked_from_the_summary(fixture_runs):
    (fixture_runs / "exps.json").write_text(json.dumps(_exps([(8, 0.30), (4, 0.25), (16, 0.28)])))
    params = fixture_params(seeds=(1,))
    params["report"]["sweep"]["exps"] = str(fixture_runs / "exps.json")
    summary = _run(fixture_runs, params)
    md = (fixture_runs / "out" / "summary.md").read_text()
    links = re.findall(r"!\[[^]]*\]\((plots/[^)]+\.png)\)", md)
    kinds = {"training", "forgetting", "popularity", "sweep"}
    assert {k for k in kinds if any(k in l for l in links)} == kinds
    pngs = sorted((fixture_runs / "out" / "plots").glob("*.png"))
    assert sorted(links) == sorted(f"plots/{p.name}" for p in pngs)
    for p in pngs:
        assert p.stat().st_size > 2000 and p.read_bytes()[:8] == PNG_MAGIC
    assert summary["analyses"]["toy"]["sweep"]["points"]["kdsr_sasrec"] == [[4.0, 0.25, "exp-0"],
                                                                            [8.0, 0.30, "workspace"],
                                                                            [16.0, 0.28, "exp-1"]]
    # data files behind the dvc.yaml `plots:` definitions
    data = fixture_runs / "out" / "plots" / "data"
    loss = (data / "training" / "toy" / "sasrec" / "s1" / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tvalue" and loss[1] == "0\t3.0"
    assert (data / "forgetting" / "toy" / "kdsr_sasrec" / "image_E_M.tsv").exists()
    assert (data / "sweep" / "toy" / "kdsr_sasrec.tsv").exists()


def test_popularity_groups_by_hand():
    counts = np.array([0, 5, 0, 1, 9, 2, 2, 7])  # item 0 = padding, item 2 unseen
    g = popularity_groups(counts, 3)
    # seen items by count (ties by id): 3(1) 5(2) 6(2) 1(5) 7(7) 4(9) -> groups of 2
    assert g.tolist() == [-1, 2, 0, 1, 3, 1, 2, 3]


def test_popularity_group_zero_is_unseen_items(fixture_runs):
    summary = _run(fixture_runs, fixture_params(seeds=(1,)))
    pop = summary["analyses"]["toy"]["popularity"][0]
    # make_split: every 5th user's test target is item 40, never in training -> 6 of 30 instances in group 0
    assert pop["instances"][0] == 6 and sum(pop["instances"]) == 30 and pop["groups"] == 3
    # without the split, the training counts recorded in per_user.parquet (target_train_count) are used
    (fixture_runs / "data" / "prepared" / "toy" / "split.parquet").unlink()
    pop2 = _run(fixture_runs, fixture_params(seeds=(1,)))["analyses"]["toy"]["popularity"][0]
    assert pop2["instances"][0] == 6 and sum(pop2["instances"]) == 30


def test_sweep_and_missing_inputs_are_skipped_with_notes(fixture_runs):
    (fixture_runs / "exps.json").write_text(json.dumps(_exps([(8, 0.30)])))
    params = fixture_params(seeds=(1,))
    params["report"]["sweep"]["exps"] = str(fixture_runs / "exps.json")
    params["runs"]["baselines"].append({"model": "not_run_yet", "code": "sasrec", "data": "prepared"})
    summary = _run(fixture_runs, params)
    notes = " ".join(summary["notes"]["toy"])
    assert "fewer than two values of kdsr.D" in notes and "not_run_yet" in notes
    assert not list((fixture_runs / "out" / "plots").glob("*sweep*"))


def test_empty_reports_dir_still_renders(tmp_path):
    summary = _run(tmp_path)
    assert summary["tables"] == [] and "no evaluated runs" in " ".join(summary["notes"]["toy"])
    assert (tmp_path / "out" / "summary.md").exists()


def test_bad_inputs_are_clear_errors(fixture_runs):
    params = fixture_params()
    params["report"]["test"] = "sign"
    with pytest.raises(ParamError, match="report.test"):
        _run(fixture_runs, params)
    p = fixture_runs / "reports" / "toy" / "odmt" / "s2" / "metrics.json"
    p.write_text("{")
    with pytest.raises(DataError, match="odmt/s2/metrics.json"):
        _run(fixture_runs)


def test_read_dvclive_falls_back_to_history(tmp_path):
    (tmp_path / "history.json").write_text(json.dumps([{"epoch": 1, "train/loss": 2.0}, {"epoch": 2, "train/loss": 1.5}]))
    assert read_dvclive(tmp_path / "dvclive") == {"train/loss": [(0, 2.0), (1, 1.5)]}


def test_sweep_points_reads_nested_metrics():
    exps = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": {"kdsr": {"D": 2}}}},
                                         "metrics": {"m.json": {"data": {"toy": {"m": {"test": {"ndcg@10": 0.1}}}}}}}}]
    assert sweep_points(exps, "kdsr.D", {"m": "toy/m/test/ndcg@10"}) == {"m": [(2.0, 0.1, "workspace")]}


@pytest.mark.slow  # three `dvc` subprocesses (~5 s); run with `pytest -m slow tests/report`
def test_dvc_plots_definitions_read_the_report_data(fixture_runs, repo_root, tmp_path):
    """The `plots:` section of the real dvc.yaml renders every curve the report wrote (`dvc plots show --json`)."""
    import shutil
    import subprocess
    import sys

    import yaml

    _run(fixture_runs, fixture_params(seeds=(1,)))
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    shutil.copytree(fixture_runs / "out" / "plots", repo / "reports" / "plots")
    plots = yaml.safe_load((repo_root / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True, env=env)
    res = subprocess.run([dvc, "plots", "show", "--json"], cwd=repo, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert not out.get("errors")
    names = list(out["data"])
    written = sorted(p.relative_to(repo).as_posix() for p in (repo / "reports" / "plots" / "data").rglob("*.tsv"))
    assert sorted(names) == written and any("popularity" in n for n in names) and any("forgetting" in n for n in names)


def test_group_metric_by_hand():
    from modalrec.report.plots import group_metric

    groups = np.array([-1, 1, 1, 2, 2])  # items 1..4; no item in group 0
    means, counts = group_metric(np.array([1, 2, 3, 3]), np.array([0, 20, 1, 3]), groups, 10, "hr", 2)
    assert counts == [0, 2, 2] and np.isnan(means[0]) and means[1:] == [0.5, 1.0]


def test_branch_curves_table_and_plot(fixture_runs):
    """The per-epoch table of ODMT's ensemble, branches, distillation weight and loss: means over the 3 seeds of
    the fixture's dvclive series (tests/report/conftest.py odmt_curves); sasrec_lf has no branch series."""
    summary = _run(fixture_runs)
    md = (fixture_runs / "out" / "summary.md").read_text()
    assert "### Branches per epoch" in md and "**`odmt`: validation hr@10 per epoch" in md
    assert "`sasrec_lf`: validation" not in md
    header = next(l for l in md.splitlines() if l.startswith("| epoch |"))
    assert header == "| epoch | ensemble | id | text | kd_weight | kd | ce |"
    rows = [l for l in md.splitlines() if re.match(r"\| \d", l)]
    # epoch 1: ensemble mean(0.1, 0.2, 0.3) = 0.2; epoch 3: text mean(0.15, 0.30, 0.45) = 0.3, kd mean(3, 4, 5) = 4
    assert rows[0] == "| 1 | 0.2000 | 0.1000 | 0.0500 | 0.0100 | 4.0000 | 9.0000 |"
    assert rows[2] == "| 3 * | 0.3000 | 0.2000 | 0.3000 | 1.0000 | 4.0000 | 7.0000 |"
    data = summary["analyses"]["toy"]["branches"]["odmt"]
    assert np.allclose(data["valid/text/hr@10"], [[1, 0.05], [2, 0.1], [3, 0.3]])
    png = fixture_runs / "out" / "plots" / "toy_branches_odmt.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and "(plots/toy_branches_odmt.png)" in md
