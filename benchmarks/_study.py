"""What the reproduction studies (benchmarks/kdsr_study.py, odmt_study.py, baselines_study.py) share: the ``modalrec``
commands run in a scratch folder of their own (its own params.yaml, data/, models/, reports/), runs skipped when
already trained or evaluated, several runs at a time (``--jobs``), and each run's best validation value from its
``history.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO


def cli(workdir: Path, *args: str, env: dict[str, str] | None = None, log: IO[str] | None = None) -> None:
    """``modalrec <args>`` in ``workdir`` (the same function DVC's stages call); output to ``log`` when given."""
    cmd = [sys.executable, "-c", "import sys; from modalrec.cli import main; main(sys.argv[1:])", *args]
    print("+ modalrec", " ".join(args), flush=True, file=log or sys.stdout)
    if log is not None:
        log.flush()
    subprocess.run(cmd, cwd=workdir, check=True, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)


def trained(workdir: Path, dataset: str, name: str, seed: int) -> bool:
    return (workdir / "models" / dataset / name / f"s{seed}" / "history.json").exists()


def evaluated(workdir: Path, dataset: str, name: str, seed: int) -> bool:
    return (workdir / "reports" / dataset / name / f"s{seed}" / "metrics.json").exists()


def train_eval(workdir: Path, dataset: str, name: str, seed: int, env: dict[str, str] | None = None,
               log: IO[str] | None = None) -> None:
    """Train then evaluate one run, each step skipped when its output exists."""
    if not trained(workdir, dataset, name, seed):
        cli(workdir, "train", name, "--seed", str(seed), env=env, log=log)
    if not evaluated(workdir, dataset, name, seed):
        cli(workdir, "evaluate", name, "--seed", str(seed), env=env, log=log)


def train_eval_all(workdir: Path, dataset: str, runs: list[tuple[str, int]], jobs: int = 1) -> None:
    """:func:`train_eval` for every ``(name, seed)`` in ``runs``, in that order, ``jobs`` at a time.

    ``jobs`` 1 runs them one after the other in this process's environment, output inline. With more, each run gets
    ``OMP_NUM_THREADS`` torch threads when the environment sets it, else ``cpus // jobs``, and its output goes to
    ``<workdir>/logs/<name>-s<seed>.log``; a line marks each start and end. torch's CPU results depend on the thread
    count (docs/training.md; each run records its own in config.json, and :func:`threads_line` puts it in a
    document's rebuild command), not on ``jobs``. Raises the first failure after the runs already started end."""
    todo = [(n, s) for n, s in dict.fromkeys(runs)
            if not (trained(workdir, dataset, n, s) and evaluated(workdir, dataset, n, s))]
    if jobs <= 1:
        for n, s in todo:
            train_eval(workdir, dataset, n, s)
        return
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    (workdir / "logs").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    stop = threading.Event()  # after a failure, runs not yet started are not started

    def one(run: tuple[str, int]) -> None:
        n, s = run
        if stop.is_set():
            return
        path = workdir / "logs" / f"{n}-s{s}.log"
        print(f"[{time.perf_counter() - t0:7.1f} s] start {n} seed {s} ({threads} thread(s)) -> {path}", flush=True)
        with open(path, "a") as log:
            try:
                train_eval(workdir, dataset, n, s, env=env, log=log)
            except subprocess.CalledProcessError as e:
                stop.set()
                print(f"[{time.perf_counter() - t0:7.1f} s] FAILED {n} seed {s}: see {path}", flush=True)
                raise RuntimeError(f"{n} seed {s} failed (exit {e.returncode}); its output: {path}") from None
        print(f"[{time.perf_counter() - t0:7.1f} s] done {n} seed {s}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(one, r) for r in todo]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    print(f"{len(todo)} runs, {jobs} at a time, in {time.perf_counter() - t0:.0f} s", flush=True)


def add_jobs_argument(ap) -> None:
    """The studies' ``--jobs`` option (:func:`train_eval_all`)."""
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, each with OMP_NUM_THREADS (when set) or cpus // jobs torch threads and its "
                         "output in <workdir>/logs/ (the numbers depend on the thread count, which the document's "
                         "rebuild command names)")


def threads_line(workdir: Path, dataset: str, runs: list[tuple[str, int]], default: int = 1) -> str:
    """The ``export OMP_NUM_THREADS=...`` line of a document's rebuild command: the CPU thread count the runs recorded
    (config.json ``compute.cpu_threads``; runs trained before it was recorded count as ``default``, the value the
    studies were run with). torch's CPU results depend on it, so the numbers are rebuilt only with the same count."""
    counts = set()
    for n, s in runs:
        path = workdir / "models" / dataset / n / f"s{s}" / "config.json"
        if not path.exists():
            continue
        cfg = json.loads(path.read_text())
        counts.add((cfg.get("compute") or {}).get("cpu_threads") or default)
    note = "torch's CPU results depend on the thread count (docs/training.md)"
    if len(counts) > 1:
        return f"export OMP_NUM_THREADS={min(counts)}  # the runs used {sorted(counts)} threads; {note}"
    return f"export OMP_NUM_THREADS={counts.pop() if counts else default}  # the runs' thread count: {note}"


def best_valid(workdir: Path, dataset: str, name: str, seed: int, monitor: str) -> tuple[float, int]:
    """(best ``monitor`` value, its epoch) over the run's history (the earliest epoch on ties)."""
    hist = json.loads((workdir / "models" / dataset / name / f"s{seed}" / "history.json").read_text())
    best = max(hist, key=lambda r: (r[monitor], -r["epoch"]))
    return float(best[monitor]), int(best["epoch"])
