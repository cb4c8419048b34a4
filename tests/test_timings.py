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
    rc, times, total = run([sys.executable, "-c", code], out)
    assert rc == 3 and [n for n, _ in times] == ["a", "b"] and "Running stage 'b'" in out.getvalue()
    assert times[0][1] >= 0.25 and total >= times[0][1] + times[1][1] - 1e-6


def test_a_stage_summary_line_ends_with_its_wall_time(tmp_path, capsys):
    from modalrec.stages import metrics

    metrics.run({"base": {"dataset": "toy", "seeds": [1]}, "runs": {"baselines": [{"model": "sasrec"}]}},
                reports_root=tmp_path)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("collected 0 models of toy") and line.rsplit("| wall ", 1)[1].endswith(" s")
