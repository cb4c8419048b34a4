"""Compress + distill figures (issue targets, 2 CPU cores):

- ``beauty``: Beauty-size, 12,101 items with 768-d image and text features, Beauty's real training sequences when
  ../shared is present (else generated ones of the same shape), the shipped ``compress`` and ``kdsr`` params
  (D=8, x=100, 2M sampled pairs): target < 2 minutes and < 2 GB peak RSS for compress (both modalities) + distill.
- ``100k``: a generated 100,000-item catalogue (250k users): target < 10 minutes and < 4 GB.
- ``lookup``: the pairs of a training batch, 256 sequences x 50 items = 640k pairs, through the teacher's within-row
  fast path (``batch_lookup``) and the generic ``lookup(i, j)`` (what CDL calls): target < 50 ms.

The features are low-rank plus noise (rank 32), so the autoencoder has structure to find; its run time depends on the
data only through the number of epochs early stopping allows. Each case runs in a fresh subprocess so its peak RSS
(``ru_maxrss``) is its own.

Usage: python benchmarks/teacher.py [beauty] [100k] [lookup]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEAUTY = ROOT.parent / "shared" / "datasets" / "amazon2014-beauty-seq" / "Beauty" / "user_sequence.txt"


def features(n: int, d: int = 768, rank: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rank)).astype(np.float32) @ rng.normal(size=(rank, d)).astype(np.float32) / rank ** 0.5
    return x + 0.1 * rng.normal(size=(n, d)).astype(np.float32)


def sequences(n_items: int, n_users: int, mean_len: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = 5 + rng.geometric(1 / max(mean_len - 4, 1), size=n_users)
    items = np.minimum(rng.zipf(1.2, size=int(lens.sum())), n_items)
    items = rng.permutation(n_items)[items - 1] + 1
    return np.split(items, np.cumsum(lens)[:-1])


def beauty_sequences() -> tuple[int, list[np.ndarray], str]:
    if not BEAUTY.is_file():
        return 12101, sequences(12101, 22363, 9), "generated (../shared absent)"
    ids: dict[str, int] = {}
    seqs = []
    for line in BEAUTY.read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            s = [ids.setdefault(t, len(ids) + 1) for t in parts[1:]]
            seqs.append(np.asarray(s[: max(1, len(s) - max(1, int(0.2 * len(s))))]))  # the 80% training part
    return len(ids), seqs, "Beauty user_sequence.txt (training parts)"


def child_fit(case: str) -> None:
    import torch
    import yaml

    from modalrec.teacher.autoencoder import AEConfig, encode_all, fit_autoencoder
    from modalrec.teacher.teacher import TeacherConfig, fit_teacher

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if case == "beauty":
        n, seqs, source = beauty_sequences()
    else:
        n, seqs, source = 100_000, sequences(100_000, 250_000, 8, seed=1), "generated"
    feats = {m: features(n, seed=k) for k, m in enumerate(("image", "text"))}
    cfg = AEConfig.from_params(params["compress"])
    t0 = time.perf_counter()
    comp, ae = {}, {}
    for m, x in feats.items():
        res = fit_autoencoder(x, cfg, seed=2023, progress=False)
        z = np.zeros((n + 1, cfg.dim), np.float32)
        z[1:] = encode_all(res.model, x)
        comp[m] = torch.from_numpy(z)
        ae[m] = {"epochs": res.epochs_run, "seconds": round(res.seconds, 1),
                 "mse_rel": round(res.summary()["reconstruction_mse_relative"], 4)}
    t_compress = time.perf_counter() - t0
    del feats
    tcfg = TeacherConfig.from_params(params["kdsr"])  # seed: kdsr.seed
    t1 = time.perf_counter()
    _, stats = fit_teacher(comp, seqs, tcfg, progress=False)
    t_distill = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print("RESULT " + json.dumps({
        "items": n, "sequences": len(seqs), "source": source, "compress_s": round(t_compress, 1),
        "distill_s": round(t_distill, 1), "total_s": round(t_compress + t_distill, 1), "peak_rss_gb": round(rss, 2),
        "ae": ae, "pairs": stats["pairs"]["total"], "D": tcfg.D, "x": tcfg.codes,
        "perplexity": {m: round(s["perplexity"], 1) for m, s in stats["modalities"].items()}}))


def child_lookup() -> None:
    import torch

    from modalrec.teacher.teacher import Teacher, TeacherConfig

    torch.manual_seed(0)
    n = 12101
    comp = {"image": torch.rand(n + 1, 128)}
    comp["image"][0] = 0
    D = TeacherConfig.D  # the kdsr.D default
    teacher = Teacher(comp, {"image": torch.rand(100, D)}, "cos", D)
    items = torch.randint(1, n + 1, (256, 50))
    iu, ju = torch.triu_indices(50, 50)
    b = torch.arange(256).repeat_interleave(len(iu))
    i, j = iu.repeat(256), ju.repeat(256)
    ii = items[:, :, None].expand(256, 50, 50)
    jj = items[:, None, :].expand(256, 50, 50)

    def med(fn, reps=15):
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return round(1000 * float(np.median(ts)), 1)

    print("RESULT " + json.dumps({
        "pairs": 256 * 50 * 50, "threads": torch.get_num_threads(),
        "batch_lookup_all_ms": med(lambda: teacher.batch_lookup(items, "image")),
        "batch_lookup_upper_pairs_ms": med(lambda: teacher.batch_lookup(items, "image", b, i, j)),
        "generic_lookup_ms": med(lambda: teacher.lookup(ii, jj, "image"), reps=5)}))


def run_child(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(next(line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT ")))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        return child_lookup() if argv[1] == "lookup" else child_fit(argv[1])
    cases = argv or ["lookup", "beauty", "100k"]
    targets = {"beauty": (120, 2.0), "100k": (600, 4.0)}
    for case in cases:
        r = run_child(case)
        if case == "lookup":
            print(f"lookup ({r['pairs']:,} pairs, {r['threads']} threads): batch_lookup all pairs "
                  f"{r['batch_lookup_all_ms']} ms, upper-triangle pairs {r['batch_lookup_upper_pairs_ms']} ms, "
                  f"generic lookup(i, j) {r['generic_lookup_ms']} ms (target < 50 ms)")
            continue
        t, g = targets[case]
        print(f"{case}: {r['items']:,} items, {r['sequences']:,} sequences ({r['source']}): compress "
              f"{r['compress_s']} s (AE {r['ae']}) + distill {r['distill_s']} s on {r['pairs']:,} pairs "
              f"(D={r['D']}, x={r['x']}, perplexity {r['perplexity']}) = {r['total_s']} s, peak RSS "
              f"{r['peak_rss_gb']} GB (targets < {t} s, < {g} GB)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
