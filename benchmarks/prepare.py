"""Prepare-stage figures: Beauty (target < 10 s on 2 cores) and a generated catalogue of 1,000,000 interactions
(target < 60 s and < 4 GB peak RSS). Each case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own.

The 1M catalogue is written once as RecBole atomic files (``bench.inter``: user, item, rating, timestamp; ``bench.item``:
a title per item) with Zipf-distributed items and geometric user activity, then prepared with iterative 5-core and
the ratio split, i.e. the full read -> filter -> split -> write path.

Usage: python benchmarks/prepare.py [--n 1000000] [--skip-beauty]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "datasets" / "amazon2014-beauty-seq" / "Beauty" / "user_sequence.txt"


def make_catalogue(d: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_users, n_items = n // 10, n // 20
    users = rng.integers(0, n_users, size=n)
    items = np.minimum(rng.zipf(1.3, size=n), n_items) - 1
    items = rng.permutation(n_items)[items]
    ts = rng.integers(1_300_000_000, 1_400_000_000, size=n)
    rating = rng.integers(1, 6, size=n)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "bench.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.writelines(f"U{u}\tI{i}\t{r}.0\t{t}\n" for u, i, r, t in zip(users, items, rating, ts))
    with open(d / "bench.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\n")
        f.writelines(f"I{i}\tproduct number {i}\n" for i in range(n_items))
    return d


def child(name: str, entry: dict) -> None:
    """Run one prepare in this process and print a JSON line with the timing and peak RSS."""
    from modalrec.stages.prepare import run

    t0 = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="bench_prep_"))
    run({"base": {"dataset": name}, "datasets": {name: entry}}, out_root=out, progress=False)
    secs = time.perf_counter() - t0
    stats = json.loads((out / name / "stats.json").read_text())
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB
    print("RESULT " + json.dumps({"seconds": secs, "peak_rss_gb": rss_gb, "users": stats["users"],
                                  "items": stats["items"], "interactions": stats["interactions"]}))


def measure(name: str, entry: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", name, json.dumps(entry)], capture_output=True,
                          text=True, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--skip-beauty", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], json.loads(a.child[1]))
        return
    ratio = {"filter": {"user_core": 5, "item_core": 5}, "split": {"name": "ratio"}}
    if not a.skip_beauty:
        if BEAUTY.exists():
            r = measure("beauty", {"format": "user_sequence", "path": str(BEAUTY), **ratio})
            print(f"prepare Beauty (user_sequence, 5-core, ratio): {r['seconds']:.2f} s, peak RSS "
                  f"{r['peak_rss_gb']:.2f} GB -> {r['users']:,} users, {r['items']:,} items, "
                  f"{r['interactions']:,} interactions (target < 10 s)")
        else:
            print(f"prepare Beauty: skipped ({BEAUTY} absent)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        d = make_catalogue(Path(tmp) / "bench", a.n)
        print(f"generated {a.n:,}-interaction RecBole catalogue in {time.perf_counter() - t0:.1f} s (not timed below)")
        r = measure("bench", {"format": "recbole", "path": str(d), **ratio})
    print(f"prepare {a.n:,} interactions (recbole, 5-core, ratio): {r['seconds']:.2f} s, peak RSS "
          f"{r['peak_rss_gb']:.2f} GB -> {r['users']:,} users, {r['items']:,} items, "
          f"{r['interactions']:,} interactions (targets < 60 s, < 4 GB)")


if __name__ == "__main__":
    main()
