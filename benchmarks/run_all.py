"""Run every benchmark script in this folder in turn (each prints its own figures).

Usage: python benchmarks/run_all.py [name ...]    e.g. `python benchmarks/run_all.py prepare teacher`
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py")
    if argv:
        scripts = [p for p in scripts if p.stem in argv]
    failed = []
    for p in scripts:
        print(f"\n=== {p.stem} ===", flush=True)
        if subprocess.call([sys.executable, str(p)]) != 0:
            failed.append(p.stem)
    print(f"\n{len(scripts) - len(failed)}/{len(scripts)} benchmarks ran" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
