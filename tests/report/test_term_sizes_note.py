"""The report's loss-term note (issue 18): KDSR's terms/<t>_grad_ratio series, first -> last epoch, mean over seeds,
terms under 1% flagged."""

from pathlib import Path

from modalrec.io import write_json
from modalrec.report.collect import Run
from modalrec.report.curves import term_sizes


def test_term_sizes_note_reads_the_dvclive_series(tmp_path: Path):
    models = tmp_path / "models"
    runs = []
    for seed, (a, b) in ((1, (0.5, 0.002)), (2, (0.7, 0.004))):
        d = models / "ds" / "kd" / f"s{seed}"
        write_json(d / "history.json", [{"epoch": 1, "terms/image_code_grad_ratio": a, "terms/rec": 5.0},
                                        {"epoch": 2, "terms/image_code_grad_ratio": b, "terms/rec": 4.0}])
        runs.append(Run("ds", "kd", seed, tmp_path / "reports" / "ds" / "kd" / f"s{seed}", {}, {}, {}))
    d = models / "ds" / "plain" / "s1"  # a model without CDL logs no terms/ series: no note
    write_json(d / "history.json", [{"epoch": 1, "train/loss": 3.0}])
    runs.append(Run("ds", "plain", 1, tmp_path / "reports" / "ds" / "plain" / "s1", {}, {}, {}))
    sizes, notes = term_sizes("ds", runs, models)
    assert set(sizes) == {"kd"}
    first, last = sizes["kd"]["image_code"]
    assert abs(first - 0.6) < 1e-9 and abs(last - 0.003) < 1e-9
    assert len(notes) == 1 and "image_code 0.6 → 0.003 ⚠" in notes[0]
