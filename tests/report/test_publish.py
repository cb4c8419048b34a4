"""docs/results/<name>.md from a report folder: title, rebuild commands, the paired test over seeds computed from the
runs' metrics.json (checked against scipy by hand), plot links pointing at the copied PNGs."""

import json

import numpy as np
from scipy import stats

from modalrec.report.publish import publish, seed_table


def _runs(root, values):
    for model, per_seed in values.items():
        for seed, v in per_seed.items():
            d = root / "ds" / model / f"s{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"test": {"ndcg@10": v}, "valid": {"ndcg@10": v / 2}}))


def test_seed_table_pairs_seeds_and_tests_them(tmp_path):
    a, b = {1: .30, 2: .32, 3: .35}, {1: .28, 2: .31, 3: .30}
    _runs(tmp_path, {"prop": a, "base": {**b, 4: .9}, "lonely": {1: .5}})
    lines = seed_table(tmp_path, "ds", [("prop", "base"), ("lonely", "base")], [1, 2, 3, 4], ("ndcg@10",))
    p = stats.ttest_rel(list(a.values()), list(b.values())).pvalue
    change = (np.mean(list(a.values())) - np.mean(list(b.values()))) / np.mean(list(b.values())) * 100
    assert lines[2] == f"| `prop` | `base` | 3 | 0.3233 / 0.2967, {change:+.1f}%, p = {p:.3f} |"
    assert lines[3] == "| `lonely` | `base` | 1 | 0.5000 / 0.2800, +78.6%, p = n/a |"  # one shared seed: no test
    _runs(tmp_path, {"up": {1: .40, 2: .43, 3: .45}, "down": {1: .10, 2: .12, 3: .15}})  # gaps .30-.31: p ~ 1e-4
    assert seed_table(tmp_path, "ds", [("up", "down")], [1, 2, 3], ("ndcg@10",))[2].endswith("p < 0.001 |")


def test_publish_writes_the_document_and_its_plots(tmp_path):
    rep = tmp_path / "reports"
    (rep / "plots").mkdir(parents=True)
    (rep / "plots" / "ds_training_m.png").write_bytes(b"\x89PNG")
    (rep / "summary.md").write_text("# modalrec results\n\n| a |\n\n![curves](plots/ds_training_m.png)\n")
    (rep / "summary.json").write_text("{}")
    out = publish(rep, tmp_path / "docs" / "results" / "study.md", "A study", ["python x.py --seeds 1 2"],
                  ["## Over seeds", ""])
    text = out.read_text()
    assert text.startswith("# A study\n") and "modalrec results" not in text
    assert "```bash\npython x.py --seeds 1 2\n```" in text and text.index("## Over seeds") < text.index("| a |")
    assert "![curves](study/ds_training_m.png)" in text
    assert (tmp_path / "docs" / "results" / "study" / "ds_training_m.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "docs" / "results" / "study.json").exists()
    assert not list((tmp_path / "docs" / "results").glob(".*tmp"))
