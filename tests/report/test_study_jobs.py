"""The studies' runner (benchmarks/_study.py): several runs at a time, each with its share of the CPU threads and its
own log, skipping what is done, and a failure named with its log after the started runs end."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from tiny_data import write_tiny_prepared

ROOT = Path(__file__).resolve().parents[2]
DS = "tiny"


def _study():
    spec = importlib.util.spec_from_file_location("_study", ROOT / "benchmarks" / "_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("study")
    write_tiny_prepared(tmp_path / "data" / "prepared" / DS, DS, n_users=80, n_items=40, n_interactions=700)
    repo = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = {"base": {"dataset": DS, "seeds": [1]}, "runs": {"baselines": [], "kdsr": [], "odmt": []},
              "datasets": {DS: {"format": "synthetic"}},
              "train": {**repo["train"], "max_len": 8, "device": "cpu", "epochs": 1, "batch_size": 32},
              "evaluate": {**repo["evaluate"], "batch_size": 64},
              "models": {"sasrec": {"arch": "sasrec", "dim": 8}, "gru4rec": {"arch": "gru4rec", "dim": 8, "hidden": 8}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_runs_go_side_by_side_with_a_share_of_the_threads_each(workdir, capsys):
    st = _study()
    runs = [("sasrec", 1), ("gru4rec", 1), ("sasrec", 1)]  # a run named twice runs once
    st.train_eval_all(workdir, DS, runs, jobs=2)
    threads = max(1, (os.cpu_count() or 1) // 2)
    for name in ("sasrec", "gru4rec"):
        assert st.trained(workdir, DS, name, 1) and st.evaluated(workdir, DS, name, 1)
        cfg = json.loads((workdir / "models" / DS / name / "s1" / "config.json").read_text())
        assert cfg["compute"]["cpu_threads"] == threads  # what the run recorded is what it was given
        log = (workdir / "logs" / f"{name}-s1.log").read_text()
        assert "+ modalrec train" in log and "evaluated " in log
    out = capsys.readouterr().out
    assert out.count("start ") == 2 and "2 runs, 2 at a time" in out
    st.train_eval_all(workdir, DS, runs, jobs=2)  # everything done: nothing starts
    assert "start " not in capsys.readouterr().out


def test_the_rebuild_command_names_the_runs_thread_count(workdir):
    st = _study()  # the runs of the first test: cpus // 2 threads each
    runs = [("sasrec", 1), ("gru4rec", 1), ("never_trained", 1)]
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert st.threads_line(workdir, DS, runs).startswith(f"export OMP_NUM_THREADS={threads}  # the runs' thread count")
    cfg = workdir / "models" / DS / "gru4rec" / "s1" / "config.json"
    text = cfg.read_text()
    rec = json.loads(text)
    rec.pop("compute")  # a run trained before the count was recorded counts as the default
    cfg.write_text(json.dumps(rec))
    try:
        line = st.threads_line(workdir, DS, runs, default=threads + 3)
    finally:
        cfg.write_text(text)
    assert line.startswith(f"export OMP_NUM_THREADS={threads}  # the runs used {[threads, threads + 3]} threads")


def test_a_failed_run_is_named_with_its_log_and_the_environment_s_threads_win(workdir, monkeypatch, capsys):
    st = _study()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the environment's count wins over cpus // jobs
    with pytest.raises(RuntimeError, match=r"no_such_model seed 1 failed .*logs/no_such_model-s1\.log"):
        st.train_eval_all(workdir, DS, [("no_such_model", 1), ("sasrec", 1)], jobs=2)
    assert "(3 thread(s))" in capsys.readouterr().out
    assert "no_such_model" in (workdir / "logs" / "no_such_model-s1.log").read_text()
