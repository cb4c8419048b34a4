"""Stage times of a ``dvc repro``: DVC's own output is silent about them, so this runs the command, passes its output
through unchanged, notes when each ``Running stage '<name>'`` line appears, and ends with a table of the stages that
ran, their wall times (DVC's hashing and the stage's start-up included) and the total.

    python -m modalrec.timings dvc repro [args...]      # what `make run` does
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Iterable, TextIO

RUNNING = re.compile(r"^Running stage '([^']+)'")


def stage_times(lines: Iterable[tuple[float, str]], end: float) -> list[tuple[str, float]]:
    """``[(stage, seconds)]`` from timestamped output lines: a stage lasts from its ``Running stage`` line to the next
    one (or ``end``)."""
    starts = [(m.group(1), t) for t, line in lines if (m := RUNNING.match(line))]
    return [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t) for i, (name, t) in enumerate(starts)]


def table(times: list[tuple[str, float]], total: float) -> str:
    """A plain-text table of stage times, slowest first, with each stage's share of the total."""
    if not times:
        return f"no stage ran ({total:.1f} s)"
    width = max(len(n) for n, _ in times)
    rows = [f"{'stage':<{width}}  {'seconds':>8}  {'share':>6}"]
    for name, sec in sorted(times, key=lambda x: -x[1]):
        rows.append(f"{name:<{width}}  {sec:8.1f}  {100 * sec / max(total, 1e-9):5.1f}%")
    rows.append(f"{'total':<{width}}  {total:8.1f}  ({len(times)} stages ran)")
    return "\n".join(rows)


def run(cmd: list[str], out: TextIO = sys.stdout, cwd: str | None = None,
        env: dict[str, str] | None = None) -> tuple[int, list[tuple[str, float]], float]:
    """Run ``cmd`` (in ``cwd``, with ``env``), echo its output, return (exit code, stage times, total seconds)."""
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
    return p.returncode, stage_times(stamped, total), total


def main(argv: list[str] | None = None) -> None:
    cmd = list(sys.argv[1:] if argv is None else argv) or ["dvc", "repro"]
    code, times, total = run(cmd)
    print("\n" + table(times, total))
    print(f"{' '.join(cmd)}: exit {code}, {len(times)} stages in {total:.1f} s")
    sys.exit(code)


if __name__ == "__main__":
    main()
