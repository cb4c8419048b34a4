"""A million-item catalogue end to end on the CPU: prepare, one epoch of SASRec with the sampled softmax, full-ranking
evaluation of 10,000 users; prints the time and peak memory of each phase.

    python benchmarks/scale.py [--items 1000000] [--interactions 10000000] [--eval-users 10000] [--keep DIR]

The catalogue is generated (seeded): users of 5 + Poisson(5) items; each next item is, with probability 0.6, one
to three ids after the previous one (a learnable sequential pattern), otherwise a Zipf-popular item or (half of
those times) a uniformly drawn one, so that most of the catalogue occurs. It is written
as a ``user_sequence.txt`` and prepared by the real prepare stage (that reader, ``min_len: 5``, leave-one-out
split), trained by the real trainer (``train.loss: sampled``, logQ-corrected, ``--negatives`` shared negatives; no
per-epoch validation) and ranked by the real evaluator against every item (``evaluate.item_chunk``: memory
batch x chunk). The full softmax would need [batch positions x N] float32 logits per step: printed for comparison.
Peak memory = the process's peak resident set (``ru_maxrss``). Target (issue 22): < 24 GB on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def report(phase: str, seconds: float, figure: str) -> None:
    print(f"{phase:<28} {seconds:9.1f} s  peak RSS {peak_gb():6.2f} GB  {figure}", flush=True)


def generate(n_items: int, n_inter: int, seed: int, path: Path) -> tuple[int, int]:
    """Write ``user_sequence.txt``; returns (users, interactions)."""
    rng = np.random.default_rng(seed)
    lengths = 5 + rng.poisson(5, size=int(n_inter / 10 * 1.05) + 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n_inter)) + 1]
    total = int(lengths.sum())
    start = np.zeros(total, bool)
    start[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    jump = start | (rng.random(total) >= 0.6)  # a fresh popular item (and every user's first)
    ranks = np.minimum(rng.zipf(1.3, size=total), n_items) - 1  # Zipf popularity over a shuffled catalogue ...
    pop_item = np.where(rng.random(total) < 0.5, rng.permutation(n_items)[ranks],
                        rng.integers(0, n_items, size=total)) + 1  # ... half of the time, a uniform tail
    step = np.where(jump, 0, rng.integers(1, 4, size=total))
    seg = np.cumsum(jump) - 1
    anchor = pop_item[jump]
    within = np.cumsum(step) - np.cumsum(step)[jump][seg]
    items = (anchor[seg] - 1 + within) % n_items + 1
    ends = np.cumsum(lengths)
    with open(path, "w") as f:
        lo = 0
        for u, hi in enumerate(ends):
            f.write(f"u{u} " + " ".join(map(str, items[lo:hi].tolist())) + "\n")
            lo = hi
    return len(lengths), total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--eval-users", type=int, default=10_000)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--item-chunk", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from modalrec.data.batching import eval_instances, train_windows
    from modalrec.data.prepared import load_prepared
    from modalrec.evaluate.protocol import EvalConfig, evaluate
    from modalrec.models import ModelContext, build_model
    from modalrec.stages import prepare
    from modalrec.train.trainer import TrainConfig, Trainer

    root = args.keep or Path(tempfile.mkdtemp(prefix="scale_"))
    root.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"scale: {args.items:,} items, {args.interactions:,} interactions, {args.threads} threads, {dev}; "
          f"work folder {root}", flush=True)
    t_all = time.perf_counter()
    try:
        t0 = time.perf_counter()
        n_users, n_inter = generate(args.items, args.interactions, args.seed, root / "user_sequence.txt")
        report("generate", time.perf_counter() - t0, f"{n_users:,} users, {n_inter:,} interactions")

        params = {"base": {"dataset": "scale"},
                  "datasets": {"scale": {"format": "user_sequence", "path": str(root / "user_sequence.txt"),
                                         "filter": {"min_len": 5}, "split": {"name": "loo"}}}}
        t0 = time.perf_counter()
        prepare.run(params, out_root=root / "prepared", progress=False)
        prep = load_prepared(root / "prepared" / "scale")
        report("prepare (+ load)", time.perf_counter() - t0, f"{prep.n_users:,} users, {prep.n_items:,} items")

        t0 = time.perf_counter()
        nt, nv = np.asarray(prep.n_train), np.asarray(prep.n_valid)
        windows = train_windows(prep.sequences, nt, args.max_len)
        torch.manual_seed(args.seed)
        model = build_model("sasrec", {"dim": args.dim, "dropout": 0.2},
                            ModelContext(n_items=prep.n_items, max_len=args.max_len))
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-3, monitor=None, loss="sampled",
                          num_negatives=args.negatives, sampling="popularity", resume=False)
        trainer = Trainer(model, windows, cfg, root / "model", args.seed, device=dev, live=False, progress=False)
        res = trainer.fit()
        secs = time.perf_counter() - t0
        positions = args.batch_size * float(windows.lengths.mean() - 1)
        full_gb = positions * (prep.n_items + 1) * 4 / 2**30
        report("train 1 epoch (sampled)", secs,
               f"{len(windows):,} windows, {len(windows) / res.seconds:,.0f} windows/s, {windows.n_targets / res.seconds:,.0f} "
               f"targets/s, loss {res.history[-1]['train/loss']:.3f} (full-softmax logits would be ~{full_gb:.1f} GB "
               f"a step)")

        t0 = time.perf_counter()
        users = np.arange(min(args.eval_users, prep.n_users))
        inst = eval_instances(prep.sequences, nt, nv, "test", args.max_len, users=users)
        ecfg = EvalConfig(ks=[10, 20], batch_size=256, item_chunk=args.item_chunk)
        ev = evaluate(model, inst, ecfg, dev, n_items=prep.n_items, progress=False)
        report("full-ranking evaluation", time.perf_counter() - t0,
               f"{len(inst):,} users x {prep.n_items:,} items, {ev.scores_per_second / 1e6:,.1f} M scores/s, "
               f"test hr@10 {ev.metrics['hr@10']:.4f} ndcg@10 {ev.metrics['ndcg@10']:.4f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - t_all:.1f} s, peak RSS {peak_gb():.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
