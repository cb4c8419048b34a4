"""Run every benchmark script in this folder in turn (each prints its own figures).

Usage: python benchmarks/run_all.py [name ...]    e.g. `python benchmarks/run_all.py prepare teacher`

`pipeline` (a fresh `dvc repro`, tens of minutes) runs only when named: `make bench-pipeline`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ON_REQUEST = {"pipeline", "scale", "gpu_check"}  # run only when named (make gpu-check; scale: a 1M-item run)


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))
    scripts = [p for p in scripts if p.stem in argv] if argv else [p for p in scripts if p.stem not in ON_REQUEST]
    failed = []
    for p in scripts:
        print(f"\n=== {p.stem} ===", flush=True)
        if subprocess.call([sys.executable, str(p)]) != 0:
            failed.append(p.stem)
    print(f"\n{len(scripts) - len(failed)}/{len(scripts)} benchmarks ran" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
