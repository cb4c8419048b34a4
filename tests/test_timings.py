"""modalrec.timings: the stage-time table `make run` ends with."""

import io
import sys

from modalrec.timings import run, stage_times, table


def test_stage_times_run_from_one_marker_to_the_next():
    lines = [(0.0, "Running stage 'prepare':\n"), (0.5, "> python pipeline/prepare.py\n"),
             (2.0, "Running stage 'train@run0-1':\n"), (2.5, "Stage 'encode@image' didn't change, skipping\n"),
             (7.0, "Running stage 'report':\n")]
    assert stage_times(lines, end=8.0) == [("prepare", 2.0), ("train@run0-1", 5.0), ("report", 1.0)]
    t = table(stage_times(lines, 8.0), 8.0).splitlines()
    assert t[1].split()[:2] == ["train@run0-1", "5.0"] and t[-1].split()[:2] == ["total", "8.0"]
    assert table([], 1.0).startswith("no stage ran")


def test_run_echoes_the_output_and_keeps_the_exit_code():
    code = ("import sys, time; print(\"Running stage 'a':\", flush=True); time.sleep(0.3); "
            "print(\"Running stage 'b':\", flush=True); sys.exit(3)")
    out = io.StringIO()
    rc, times, total, _, _ = run([sys.executable, "-c", code], out)
    assert rc == 3 and [n for n, _ in times] == ["a", "b"] and "Running stage 'b'" in out.getvalue()
    assert times[0][1] >= 0.25 and total >= times[0][1] + times[1][1] - 1e-6


def test_a_stage_summary_line_ends_with_its_wall_time(tmp_path, capsys):
    from modalrec.stages import metrics

    metrics.run({"base": {"dataset": "toy", "seeds": [1]}, "runs": {"baselines": [{"model": "sasrec"}]}},
                reports_root=tmp_path)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("collected 0 models of toy") and line.rsplit("| wall ", 1)[1].endswith(" s")


def test_training_stages_get_their_epochs_and_seconds_an_epoch():
    from modalrec.timings import stage_epochs

    lines = [(0.0, "Running stage 'train_odmt@odmt-2023':\n"),
             (1.0, "trained odmt (seed 2023) on synthetic: 20 epochs in 64.6s, best valid/hr@10=0.4143 at epoch 20; "
                   "1,785,536 parameters -> models/synthetic/odmt/s2023 | wall 66.3 s\n"),
             (2.0, "Running stage 'evaluate_odmt@odmt-2023':\n"),
             (3.0, "evaluated odmt (seed 2023) on synthetic: test ndcg@10=0.2 | wall 4.0 s\n")]
    ep = stage_epochs(lines)
    assert ep == {"train_odmt@odmt-2023": (20, 64.6)}
    rows = table(stage_times(lines, 4.0), 4.0, ep).splitlines()
    assert rows[0].split()[-2:] == ["epochs", "s/epoch"]
    train_row = next(r for r in rows if r.startswith("train_odmt"))
    assert train_row.split()[-2:] == ["20", "3.23"]
    assert next(r for r in rows if r.startswith("evaluate_odmt")).split()[-1].endswith("%")


def test_a_later_summary_in_the_same_process_counts_from_the_previous_one(monkeypatch):
    from types import SimpleNamespace

    import modalrec

    clock = iter([100.0, 103.5, 110.0])
    monkeypatch.setattr(modalrec, "_LOADED", 95.0)
    monkeypatch.setattr(modalrec, "_LAST_SUMMARY", None)
    monkeypatch.setattr(modalrec, "_time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert modalrec.wall_seconds() == 5.0  # the first summary: since the process loaded modalrec
    assert modalrec.wall_seconds() == 3.5  # later ones: since the previous summary
    assert modalrec.wall_seconds() == 6.5


def test_the_table_separates_each_stage_s_own_time_from_dvc_s_work():
    from modalrec.timings import stage_walls

    lines = [(0.0, "Running stage 'distill':\n"), (0.5, "distill image: kmeans x=100 (1.1 s)\n"),
             (3.0, "distill synthetic: kmeans x=100; 2.1 s | wall 3.8 s\n"),
             (5.0, "Running stage 'evaluate@run0-2023':\n"),
             (7.0, "evaluated sasrec (seed 2023) on synthetic: test ndcg@10=0.19 -> reports | wall 1.7 s\n"),
             (8.0, "Running stage 'report':\n")]  # a stage without a summary line (e.g. DVC skipped it)
    walls = stage_walls(lines)
    assert walls == {"distill": 3.8, "evaluate@run0-2023": 1.7}
    rows = table(stage_times(lines, 10.0), 10.0, walls=walls).splitlines()
    assert rows[0].split()[-2:] == ["own", "s"]
    assert next(r for r in rows if r.startswith("distill")).split()[:4] == ["distill", "5.0", "50.0%", "3.8"]
    assert next(r for r in rows if r.startswith("report")).split() == ["report", "2.0", "20.0%"]
    rest = rows[-1].split()
    assert rows[-1].startswith("DVC and start-up") and rest[3] == "4.5"  # 10 - 3.8 - 1.7
