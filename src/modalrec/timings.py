"""Stage times of a ``dvc repro``: DVC's own output is silent about them, so this runs the command, passes its output
through unchanged, notes when each ``Running stage '<name>'`` line appears, and ends with a table of the stages that
ran, their wall times (DVC's hashing and the stage's start-up included) and the total. Each stage's own wall time
(the ``| wall N s`` that ends its one-line summary) stands next to it, and the table ends with what the rest is: DVC's
own work between the stages (reading and rewriting dvc.lock, hashing) and the interpreters' start. For a training
stage the table also shows its epochs and seconds an epoch (the training time of its ``trained ...: N epochs in T s``
summary over N: validation every epoch included, start-up and data loading not).

    python -m modalrec.timings dvc repro [args...]      # what `make run` does
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any, Iterable, NamedTuple, TextIO

RUNNING = re.compile(r"^Running stage '([^']+)'")
TRAINED = re.compile(r"^trained .*: (\d+) epochs in ([0-9.]+) ?s")  # modalrec.stages.train's summary line
WALL = re.compile(r"\| wall ([0-9.]+) s\s*$")  # the end of every stage's summary line (modalrec.wall_seconds)


class Timed(NamedTuple):
    """What :func:`run` measured: exit code, ``[(stage, seconds)]`` in order, total seconds, :func:`stage_epochs`
    and :func:`stage_walls`."""
    code: int
    times: list[tuple[str, float]]
    total: float
    epochs: dict[str, tuple[int, float]]
    walls: dict[str, float]


def stage_times(lines: Iterable[tuple[float, str]], end: float) -> list[tuple[str, float]]:
    """``[(stage, seconds)]`` from timestamped output lines: a stage lasts from its ``Running stage`` line to the next
    one (or ``end``)."""
    starts = [(m.group(1), t) for t, line in lines if (m := RUNNING.match(line))]
    return [(name, (starts[i + 1][1] if i + 1 < len(starts) else end) - t) for i, (name, t) in enumerate(starts)]


def _per_stage(lines: Iterable[tuple[float, str]], pattern: re.Pattern, value) -> dict[str, Any]:
    """``{stage: value(match)}`` of the last line in each stage's output that ``pattern`` finds."""
    out, stage = {}, None
    for _, line in lines:
        if m := RUNNING.match(line):
            stage = m.group(1)
        elif stage is not None and (m := pattern.search(line)):
            out[stage] = value(m)
    return out


def stage_epochs(lines: Iterable[tuple[float, str]]) -> dict[str, tuple[int, float]]:
    """``{stage: (epochs, training seconds)}`` for the stages whose output has a training summary line."""
    return _per_stage(lines, TRAINED, lambda m: (int(m.group(1)), float(m.group(2))))


def stage_walls(lines: Iterable[tuple[float, str]]) -> dict[str, float]:
    """``{stage: its own wall seconds}``: the ``| wall N s`` of the last summary line in each stage's output."""
    return _per_stage(lines, WALL, lambda m: float(m.group(1)))


def table(times: list[tuple[str, float]], total: float, epochs: dict[str, tuple[int, float]] | None = None,
          walls: dict[str, float] | None = None) -> str:
    """A plain-text table of stage times, slowest first, with each stage's share of the total, its own wall time
    (``walls``: :func:`stage_walls`; the rest of its row is DVC's work and the interpreter's start) and for training
    stages (``epochs``: :func:`stage_epochs`) the epochs run and the seconds an epoch. With ``walls``, a last line
    gives the total minus the stages' own wall times."""
    if not times:
        return f"no stage ran ({total:.1f} s)"
    epochs, walls = epochs or {}, walls or {}
    width = max(len(n) for n, _ in times)
    rows = [f"{'stage':<{width}}  {'seconds':>8}  {'share':>6}" + ("  own s" if walls else "")
            + ("  epochs  s/epoch" if epochs else "")]
    for name, sec in sorted(times, key=lambda x: -x[1]):
        own = (f"  {walls[name]:5.1f}" if name in walls else f"  {'':>5}") if walls else ""
        ep = f"  {epochs[name][0]:>6}  {epochs[name][1] / max(epochs[name][0], 1):7.2f}" if name in epochs else ""
        rows.append(f"{name:<{width}}  {sec:8.1f}  {100 * sec / max(total, 1e-9):5.1f}%{own}{ep}")
    rows.append(f"{'total':<{width}}  {total:8.1f}  ({len(times)} stages ran)")
    if walls:
        rest = total - sum(walls.get(n, 0.0) for n, _ in times)
        rows.append(f"{'DVC and start-up':<{width}}  {rest:8.1f}  {100 * rest / max(total, 1e-9):5.1f}%  "
                    "(total minus the stages' own times: DVC's hashing and dvc.lock rewrites, interpreter start-up)")
    return "\n".join(rows)


def run(cmd: list[str], out: TextIO = sys.stdout, cwd: str | None = None,
        env: dict[str, str] | None = None) -> Timed:
    """Run ``cmd`` (in ``cwd``, with ``env``), echo its output, return what it measured (:class:`Timed`)."""
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
    return Timed(p.returncode, stage_times(stamped, total), total, stage_epochs(stamped), stage_walls(stamped))


def main(argv: list[str] | None = None) -> None:
    cmd = list(sys.argv[1:] if argv is None else argv) or ["dvc", "repro"]
    r = run(cmd)
    print("\n" + table(r.times, r.total, r.epochs, r.walls))
    print(f"{' '.join(cmd)}: exit {r.code}, {len(r.times)} stages in {r.total:.1f} s")
    sys.exit(r.code)


if __name__ == "__main__":
    main()
