"""ODMT / SASRec+LF / SASRec+EF throughput and memory at the default size (params.yaml models.* and odmt.train).

Builds fp16 token caches of the default shapes (EfficientNet-Lite0 tokens [N+1, 50, 1280], MiniLM tokens
[N+1, 30, 384]; random values, written with the encode stage's TokenWriter and memory-mapped with load_tokens, unless
the real caches of --dataset exist), then times training steps on random training windows of 13 items and one
full-catalogue evaluation. Prints sequences/s, items/s of the tower, peak RSS and anonymous (non-file) memory:
token rows are read from the memory map and only the rows a step needs become float, so anonymous memory stays far
below a float32 copy of the catalogue (also printed).

    python benchmarks/odmt.py [--n-items 1000] [--steps 10] [--threads 2] [--models odmt sasrec_lf sasrec_ef]
                              [--device auto|cpu|cuda]

On CUDA the steps run under autocast as the trainer does (bf16, or fp16 with a GradScaler where bf16 is missing) and
the peak GPU memory of each model is printed too.

Next to each model's training rate it prints an *estimated compute bound*: the matrix-product FLOPs of one training
step (forward and backward, counted by ``torch.utils.flop_counter`` on a step of the benchmark) divided by the fp32
matrix-product rate measured here and now for the step's main shapes (tower linears over ~32k tokens, the fp16
projection chunks), i.e. the rate the model would reach if everything but its matrix products were free.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modalrec.data.batching import TrainWindows, train_batches  # noqa: E402
from modalrec.encode.cache import TokenWriter, load_tokens  # noqa: E402
from modalrec.models import ModelContext, build_model  # noqa: E402
from modalrec.params import load_params  # noqa: E402
from modalrec.runs import resolve_run  # noqa: E402
from modalrec.train.trainer import deterministic_on_cpu  # noqa: E402


def proc_mem_mb() -> dict[str, float]:
    """Current RSS split into anonymous and file-backed pages (Linux /proc), in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024
    return out


def make_cache(path: Path, n_items: int, T: int, d: int, seed: int, ragged: bool) -> None:
    rng = np.random.default_rng(seed)
    with TokenWriter(path, n_items, T, d) as w:
        for s in range(1, n_items + 1, 512):
            ids = np.arange(s, min(s + 512, n_items + 1))
            tok = rng.standard_normal((len(ids), T, d), dtype=np.float32).astype(np.float16)
            mask = np.ones((len(ids), T), dtype=bool)
            if ragged:
                mask = np.arange(T)[None] < rng.integers(4, T + 1, size=len(ids))[:, None]
            w.write(ids, tok, mask)
        w.close({"family": "benchmark-random"})


def windows(n_users: int, n_items: int, seed: int, max_len: int) -> TrainWindows:
    """Training windows of the loo_window split (13 train items at most), Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    p /= p.sum()
    lengths = rng.integers(3, max_len + 2, size=n_users)
    items = np.zeros((n_users, max_len + 1), dtype=np.int64)
    for u, n in enumerate(lengths):
        items[u, max_len + 1 - n:] = rng.choice(n_items, size=n, p=p) + 1
    return TrainWindows(items=items, lengths=lengths, users=np.arange(n_users), max_len=max_len)


def step_flops(model, batch) -> float:
    """Matrix-product FLOPs (mm, addmm, bmm, attention) of one training step, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.loss(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_rate(d: int, d_tokens: int, device: torch.device, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of the step's main matrix products: linears over 32k tokens of width d (qkv, out, FFN
    in/out, their weight gradients) and the projection of 400 fp16-converted token rows of width ``d_tokens``."""
    shapes = [(32768, d, 3 * d), (32768, d, 4 * d), (32768, 4 * d, d), (4 * d, 32768, d), (400, d_tokens, d),
              (d, 400, d_tokens)]
    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        a @ b
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        rates.append(2 * m * k * n / sorted(times)[repeats // 2] / 1e9)
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-items", type=int, default=1000, help="catalogue size (synthetic default: 1000)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["odmt", "sasrec_lf", "sasrec_ef"])
    ap.add_argument("--dataset", default=None, help="use data/features/<dataset>/*_tokens.arrow when they exist")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
    params = load_params(ROOT / "params.yaml")
    max_len = 12
    tmp = tempfile.TemporaryDirectory(prefix="odmt-bench-")
    feat = ROOT / "data" / "features" / (a.dataset or "")
    if a.dataset and (feat / "text_tokens.arrow").exists() and (feat / "image_tokens.arrow").exists():
        paths = {m: feat / f"{m}_tokens.arrow" for m in ("text", "image")}
    else:
        paths = {"text": Path(tmp.name) / "text_tokens.arrow", "image": Path(tmp.name) / "image_tokens.arrow"}
        t0 = time.perf_counter()
        make_cache(paths["text"], a.n_items, 30, 384, 1, ragged=True)
        make_cache(paths["image"], a.n_items, 50, 1280, 2, ragged=False)
        print(f"built random fp16 caches for N={a.n_items} in {time.perf_counter() - t0:.1f}s")
    tokens = {m: load_tokens(p) for m, p in paths.items()}
    n_items = tokens["text"].n_items
    fp16_mb = sum(c.tokens.nbytes for c in tokens.values()) / 2**20
    print(f"caches: text {tokens['text'].tokens.shape}, image {tokens['image'].tokens.shape}; "
          f"fp16 on disk {fp16_mb:.0f} MiB, a float32 copy would be {2 * fp16_mb:.0f} MiB")
    wins = windows(4096, n_items, 0, max_len)
    counts = torch.from_numpy(np.bincount(wins.items.ravel(), minlength=n_items + 1)).float()
    counts[0] = 0
    ctx = ModelContext(n_items=n_items, max_len=max_len, tokens=tokens, item_counts=counts, device=device)
    base_anon = proc_mem_mb()["RssAnon"]
    print(f"device={device}{f' (autocast {amp_dtype})' if cuda else ''} threads={a.threads}  "
          "(shared machines inflate these timings)")
    with deterministic_on_cpu(device):  # the kernels the trainer uses on CPU (it times what training runs)
        for name in a.models:
            spec = resolve_run(params, name, dataset="synthetic")  # the odmt section folded in, as training does
            train_cfg = spec.train
            torch.manual_seed(0)
            model = build_model(name, spec.cfg, ctx, arch=spec.arch)
            opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
            scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            model.train()
            model.on_epoch_start(1)
            it = train_batches(wins, int(train_cfg.batch_size), 0, 1)
            seqs, t_train = 0, 0.0
            for step, batch in zip(range(a.steps + 1), it):
                batch = batch.to(device)
                sync()
                t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=amp_dtype, enabled=cuda):
                    loss = model.loss(batch)["loss"]
                opt.zero_grad()
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(opt)
                scaler.update()
                sync()
                if step:  # the first step warms up allocators and the page cache
                    t_train += time.perf_counter() - t0
                    seqs += batch.input_ids.shape[0]
            flops = step_flops(model, batch) if not cuda else None  # on the last batch; not timed
            model.eval()
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.catalogue()
                sync()
                t_cat = time.perf_counter() - t0
                users = torch.from_numpy(wins.items[:1024, 1:]).to(device)
                model.score_all(users[:64])  # warm-up
                sync()
                t0 = time.perf_counter()
                model.score_all(users)
                sync()
                t_score = time.perf_counter() - t0
            mem = proc_mem_mb()
            gpu = f" | GPU peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if cuda else ""
            bound = ""
            if flops:
                rate = matmul_rate(model.cfg.d, max(c.tokens.shape[-1] for c in tokens.values()), device)
                users_per_step = batch.input_ids.shape[0]
                bound = (f" (estimated compute bound {users_per_step * rate * 1e9 / flops:5.0f} seq/s: "
                         f"{flops / 1e9:.1f} GFLOP/step at {rate:.0f} GFLOP/s)")
            print(f"{name:10s} train {seqs / t_train:7.1f} seq/s{bound} ({train_cfg.batch_size} users/step, "
                  f"{a.steps} steps) | catalogue tower {n_items / t_cat:7.0f} items/s | scoring "
                  f"{1024 / t_score:7.0f} users/s | RSS {mem['VmRSS']:.0f} MiB (anon {mem['RssAnon']:.0f}, "
                  f"+{mem['RssAnon'] - base_anon:.0f} since caches loaded; file-backed {mem['RssFile']:.0f}){gpu}")
            del model, opt
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"summary: peak RSS {peak:.0f} MiB for N={n_items} (fp16 caches {fp16_mb:.0f} MiB, float32 copy would be "
          f"{2 * fp16_mb:.0f} MiB)")


if __name__ == "__main__":
    main()
