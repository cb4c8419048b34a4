"""Stage times of a ``dvc repro``: DVC's own output is silent about them, so this runs the command, passes its output
through unchanged, notes when each ``Running stage '<name>'`` line appears, and ends with a table of the stages that
ran, their wall times (DVC's hashing and the stage's start-up included) and the total. For a training stage the
table also shows its epochs and seconds an epoch (the training time of its ``trained ...: N epochs in T s`` summary
over N: validation every epoch included, start-up and data loading not).

    python -m modalrec.timings dvc repro [args...]      # what `make run` does
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Iterable, TextIO

RUNNING = re.compile(r"^Running stage '([^']+)'")
TRAINED = re.compile(r"^trained .*: (\d+) epochs in ([0-9.]+) ?s")  # modalrec.stages.train's summary line


def stage_times(lines: Iterable[tuple[float, str]], end: float) -> list[tuple[str, float]]:
    """``[(stage, seconds)]`` from timestamped output lines: a stage lasts from its ``Running stage`` line to the next
    one (or ``end``)."""
    starts = [(m.group(1), t) for t, line in lines if (m := RUNNING.match(line))]
    return [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t) for i, (name, t) in enumerate(starts)]


def stage_epochs(lines: Iterable[tuple[float, str]]) -> dict[str, tuple[int, float]]:
    """``{stage: (epochs, training seconds)}`` for the stages whose output has a training summary line."""
    out, stage = {}, None
    for _, line in lines:
        if m := RUNNING.match(line):
            stage = m.group(1)
        elif stage is not None and (m := TRAINED.match(line)):
            out[stage] = (int(m.group(1)), float(m.group(2)))
    return out


def table(times: list[tuple[str, float]], total: float, epochs: dict[str, tuple[int, float]] | None = None) -> str:
    """A plain-text table of stage times, slowest first, with each stage's share of the total, and for training
    stages (``epochs``: :func:`stage_epochs`) the epochs run and the seconds an epoch."""
    if not times:
        return f"no stage ran ({total:.1f} s)"
    epochs = epochs or {}
    width = max(len(n) for n, _ in times)
    rows = [f"{'stage':<{width}}  {'seconds':>8}  {'share':>6}" + ("  epochs  s/epoch" if epochs else "")]
    for name, sec in sorted(times, key=lambda x: -x[1]):
        ep = f"  {epochs[name][0]:>6}  {epochs[name][1] / max(epochs[name][0], 1):7.2f}" if name in epochs else ""
        rows.append(f"{name:<{width}}  {sec:8.1f}  {100 * sec / max(total, 1e-9):5.1f}%{ep}")
    rows.append(f"{'total':<{width}}  {total:8.1f}  ({len(times)} stages ran)")
    return "\n".join(rows)


def run(cmd: list[str], out: TextIO = sys.stdout, cwd: str | None = None,
        env: dict[str, str] | None = None
        ) -> tuple[int, list[tuple[str, float]], float, dict[str, tuple[int, float]]]:
    """Run ``cmd`` (in ``cwd``, with ``env``), echo its output, return (exit code, stage times, total seconds,
    :func:`stage_epochs`)."""
    t0 = time.perf_counter()
    stamped: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=cwd,
                          env=env) as p:
        assert p.stdout is not None
        for line in p.stdout:
            out.write(line)
            out.flush()
            stamped.append((time.perf_counter() - t0, line))
    total = time.perf_counter() - t0
    return p.returncode, stage_times(stamped, total), total, stage_epochs(stamped)


def main(argv: list[str] | None = None) -> None:
    cmd = list(sys.argv[1:] if argv is None else argv) or ["dvc", "repro"]
    code, times, total, epochs = run(cmd)
    print("\n" + table(times, total, epochs))
    print(f"{' '.join(cmd)}: exit {code}, {len(times)} stages in {total:.1f} s")
    sys.exit(code)


if __name__ == "__main__":
    main()
