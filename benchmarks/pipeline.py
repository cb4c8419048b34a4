"""A fresh `dvc repro` of the default pipeline, timed stage by stage, for one or more git revisions.

Each revision is cloned into a temporary folder and run there from scratch (no DVC cache, no outputs) with its own
code (PYTHONPATH = the clone's src/) and this environment's packages; the table of stage times comes from
modalrec.timings (the time between DVC's `Running stage` lines, start-up and hashing included), with the epochs
and seconds an epoch of every training stage. ``--target`` reproduces only those stages (and what they need).
With several revisions, a last table puts the seconds an epoch of the training stages they share side by side.

    python benchmarks/pipeline.py                      # HEAD
    python benchmarks/pipeline.py --rev HEAD --rev 6037636   # this code next to the commit before the redesign
    python benchmarks/pipeline.py --rev 0508ba1 --rev HEAD --target train_odmt   # the ODMT family per epoch
    make bench-pipeline

Takes as long as the runs (the default pipeline: tens of minutes on 2 cores); progress is the runs' own output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modalrec.timings import run, table  # noqa: E402


def time_revision(rev: str, keep: Path | None, targets: list[str]):
    work = Path(tempfile.mkdtemp(prefix="modalrec-bench-", dir=keep))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", rev], check=True)
    # OpenMP waiting: as each stage chooses it (modalrec.wait_policy), unless this environment sets it
    env = {**os.environ, "PYTHONPATH": str(work / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DVC_NO_ANALYTICS": "1"}
    return run([str(Path(sys.executable).with_name("dvc")), "repro", *targets], cwd=str(work), env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", action="append", help="git revision to time (repeatable; default HEAD)")
    ap.add_argument("--keep", type=Path, default=None, help="make the clones under this folder (kept afterwards)")
    ap.add_argument("--target", action="append", default=[], help="a dvc.yaml stage (or stage@item) to reproduce "
                    "with what it needs, instead of the whole pipeline (repeatable)")
    a = ap.parse_args()
    revs = a.rev or ["HEAD"]
    t0 = time.perf_counter()
    results = {}
    for rev in revs:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                             check=True).stdout.strip()
        print(f"== {rev} ({sha}): fresh dvc repro {' '.join(a.target)}", flush=True)
        results[rev] = (sha, time_revision(rev, a.keep, a.target))
    for rev, (sha, r) in results.items():
        print(f"\n== {rev} ({sha}), exit {r.code}\n{table(r.times, r.total, r.epochs, r.walls)}")
    if len(results) > 1:
        print("\n" + epoch_table({rev: r.epochs for rev, (_, r) in results.items()}))
    line = "; ".join(f"{rev} ({sha}) {r.total:.0f} s, {len(r.times)} stages, exit {r.code}"
                     for rev, (sha, r) in results.items())
    what = " ".join(a.target) or "the default pipeline"
    print(f"\nsummary: fresh dvc repro of {what}: {line} [{time.perf_counter() - t0:.0f} s wall]")


def epoch_table(epochs: dict[str, dict[str, tuple[int, float]]]) -> str:
    """Seconds an epoch of the training stages every revision ran (``{rev: {stage: (epochs, seconds)}}``), side by
    side, and the first revision's over the last one's."""
    revs = list(epochs)
    shared = [s for s in epochs[revs[0]] if all(s in epochs[r] for r in revs)]
    if not shared:
        return "no training stage in common"
    width = max(len(s) for s in shared)
    head = f"{'s/epoch':<{width}}  " + "  ".join(f"{r:>10}" for r in revs) + f"  {revs[0]} / {revs[-1]}"
    rows = [head]
    for s in shared:
        per = [epochs[r][s][1] / max(epochs[r][s][0], 1) for r in revs]
        rows.append(f"{s:<{width}}  " + "  ".join(f"{v:10.2f}" for v in per) + f"  {per[0] / per[-1]:.2f}x")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
