"""What the reproduction studies (benchmarks/kdsr_study.py, odmt_study.py) share: the ``modalrec`` commands run in a
scratch folder of their own (its own params.yaml, data/, models/, reports/), runs skipped when already trained or
evaluated, and each run's best validation value from its ``history.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(workdir: Path, *args: str) -> None:
    """``modalrec <args>`` in ``workdir`` (the same function DVC's stages call)."""
    cmd = [sys.executable, "-c", "import sys; from modalrec.cli import main; main(sys.argv[1:])", *args]
    print("+ modalrec", " ".join(args), flush=True)
    subprocess.run(cmd, cwd=workdir, check=True)


def trained(workdir: Path, dataset: str, name: str, seed: int) -> bool:
    return (workdir / "models" / dataset / name / f"s{seed}" / "history.json").exists()


def evaluated(workdir: Path, dataset: str, name: str, seed: int) -> bool:
    return (workdir / "reports" / dataset / name / f"s{seed}" / "metrics.json").exists()


def train_eval(workdir: Path, dataset: str, name: str, seed: int) -> None:
    """Train then evaluate one run, each step skipped when its output exists."""
    if not trained(workdir, dataset, name, seed):
        cli(workdir, "train", name, "--seed", str(seed))
    if not evaluated(workdir, dataset, name, seed):
        cli(workdir, "evaluate", name, "--seed", str(seed))


def best_valid(workdir: Path, dataset: str, name: str, seed: int, monitor: str) -> tuple[float, int]:
    """(best ``monitor`` value, its epoch) over the run's history (the earliest epoch on ties)."""
    hist = json.loads((workdir / "models" / dataset / name / f"s{seed}" / "history.json").read_text())
    best = max(hist, key=lambda r: (r[monitor], -r["epoch"]))
    return float(best[monitor]), int(best["epoch"])
