"""Run every CUDA path of the pipeline on a small generated dataset and print what ran, where, and how fast.

    python benchmarks/gpu_check.py [--cpu] [--quick] [--keep DIR]      (make gpu-check)

The real stages run on a tiny synthetic catalogue in a temporary folder (the repository's params.yaml, shrunk):
prepare -> encode (image/text pooled and token caches, bf16 autocast on CUDA) -> compress -> distill (faiss k-means,
on GPU when faiss sees one) -> train + evaluate one epoch of a model of every family (SASRec and GRU4Rec baselines,
KDSR on SASRec and on MMSR: CDL's autograd Functions under AMP, ODMT) and of every other baseline of the papers
(SR-GNN, NextItNet, FDSA, UniSRec, DIF-SR, NOVA, Trans2D, MMSRec) with AMP on CUDA. Then the device checks:
the bf16 encoder against fp32, CDL's loss and gradients on CUDA against the CPU, full-ranking evaluation on CUDA
against the CPU and chunked against one piece, and DDP over 2 GPUs (NCCL) when there are two.

Without CUDA (or with ``--cpu``) the same stages run on the CPU fallbacks and every CUDA-only comparison is listed
as skipped. ``--quick``: prepare + the baselines + the evaluation checks only (no encoders, no teacher; what the
test suite runs). Target: < 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DS = "gpucheck"
ROWS: list[tuple[str, str, float, str]] = []
SKIPPED: list[str] = []


def row(step: str, device: str, seconds: float, figure: str) -> None:
    ROWS.append((step, device, seconds, figure))
    print(f"{step:<34} {device:<6} {seconds:8.2f} s  {figure}", flush=True)


def skip(step: str, why: str) -> None:
    SKIPPED.append(f"{step}: {why}")
    print(f"{step:<34} skipped: {why}", flush=True)


def check_params(use_cuda: bool) -> dict:
    from modalrec.params import load_params

    p = copy.deepcopy(load_params(ROOT / "params.yaml"))
    dev = "cuda" if use_cuda else "cpu"
    p["base"] = {"dataset": DS, "seeds": [2023]}
    p["datasets"][DS] = {"format": "synthetic",
                         "options": {**p["datasets"]["synthetic"]["options"], "n_users": 300, "n_items": 120,
                                     "n_interactions": 3000, "image_size": 32},
                         "filter": {"user_core": 5, "item_core": 5}, "split": {"name": "ratio", "test_ratio": 0.2,
                                                                                "valid": 1}}
    for k in ("image", "text", "image_tokens", "text_tokens"):
        p["encode"][k] = {**p["encode"][k], "device": dev}
    p["compress"].update(device=dev, max_epochs=30)
    p["train"].update(device=dev, amp=True)
    return p


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def run_stages(p: dict, root: Path, dev: str, quick: bool) -> list[str]:
    from modalrec.stages import compress, distill, encode, evaluate, prepare, train

    data, models, reports = root / "data", root / "models", root / "reports"
    _, s = timed(prepare.run, p, out_root=data / "prepared", progress=False)
    stats = json.loads((data / "prepared" / DS / "stats.json").read_text())
    row("prepare", "cpu", s, f"{stats['users']} users, {stats['items']} items, {stats['interactions']} interactions")
    runs = ["sasrec", "gru4rec"]
    if not quick:
        for m in ("text", "image", "text_tokens", "image_tokens"):
            prec = p["encode"][m].get("precision", "fp32") if dev == "cuda" else "fp32"
            _, s = timed(encode.run, p, m, prepared_root=data / "prepared", features_root=data / "features",
                         progress=False)
            row(f"encode {m} ({prec})", dev, s, f"{stats['items'] / s:.0f} items/s")
        for m in ("image", "text"):
            _, s = timed(compress.run, p, m, data_root=data, models_root=models, progress=False)
            row(f"compress {m}", dev, s, "autoencoder -> m~")
        import faiss

        _, s = timed(distill.run, p, data_root=data, models_root=models, progress=False)
        row("distill (faiss k-means)", "cuda" if faiss.get_num_gpus() > 0 else "cpu", s,
            f"faiss sees {faiss.get_num_gpus()} GPU(s)")
        runs += ["sasrec_tuned", "kdsr_sasrec", "kdsr_mmsr", "odmt"]
        # the papers' other baselines (issue 21, docs/baselines.md): each model file's CUDA / AMP path
        runs += ["srgnn", "nextitnet", "fdsa", "unisrec", "difsr", "nova", "trans2d", "mmsrec"]
    for name in runs:
        p["models"][name] = {**p["models"][name], "train": {**(p["models"][name].get("train") or {}), "epochs": 1}}
        out, s = timed(train.run, p, name, data_root=data, models_root=models, progress=False)
        cfg = json.loads((Path(out) / "config.json").read_text())
        amp = "amp" if dev == "cuda" else "fp32"
        row(f"train {name} (1 epoch, {amp})", dev, s,
            f"{cfg['n_train_windows'] / max(cfg['seconds'], 1e-9):.0f} windows/s (incl. validation)")
        rep, s = timed(evaluate.run, p, name, data_root=data, models_root=models, reports_root=reports,
                       progress=False)
        m = json.loads((Path(rep) / "metrics.json").read_text())
        row(f"evaluate {name}", dev, s, f"test ndcg@10 {m['test']['ndcg@10']:.4f} ({m['n_test']} instances)")
    return runs


def load_run(p: dict, root: Path, name: str, device: str):
    from modalrec.data.prepared import load_prepared
    from modalrec.models.base import build_model
    from modalrec.runs import resolve_run
    from modalrec.stages.train import load_context
    from modalrec.train import checkpoint as ckpt

    r = resolve_run(p, name)
    prepared = load_prepared(root / "data" / "prepared" / DS)
    ctx, _ = load_context(r, prepared, root / "data", root / "models")
    net = build_model(r.name, r.cfg, ctx, r.arch)
    net.load_state_dict(ckpt.load(root / "models" / DS / name / "s2023" / "best.pt")["model"])
    return net.to(device), prepared, r


def check_evaluation(p: dict, root: Path, use_cuda: bool) -> None:
    from modalrec.data.batching import eval_instances
    from modalrec.evaluate.protocol import EvalConfig, rank_instances

    net, prep, r = load_run(p, root, "sasrec", "cpu")
    inst = eval_instances(prep.sequences, np.asarray(prep.n_train), np.asarray(prep.n_valid), "test", r.max_len)
    cfg = EvalConfig(mask_history=True, batch_size=128)
    ref, s_cpu = timed(rank_instances, net, inst, cfg, "cpu", False)
    row("full ranking", "cpu", s_cpu, f"{len(inst) * prep.n_items / s_cpu / 1e6:.1f} M scores/s")
    dev = "cuda" if use_cuda else "cpu"
    net.to(dev)
    chunked, s = timed(rank_instances, net, inst, EvalConfig(mask_history=True, batch_size=128, item_chunk=16), dev,
                       False)
    row("chunked ranking (16 items/chunk)", dev, s, f"ranks equal to one piece: {(chunked[0] == ref[0]).mean():.4f}")
    if not use_cuda:
        skip("full ranking on CUDA vs CPU", "no CUDA")
        return
    got, s = timed(rank_instances, net, inst, cfg, "cuda", False)
    row("full ranking", "cuda", s, f"{len(inst) * prep.n_items / s / 1e6:.1f} M scores/s; "
                                   f"ranks equal to CPU: {(got[0] == ref[0]).mean():.4f}")


def check_cdl(p: dict, root: Path, dev: str = "cuda") -> None:
    """KDSR's loss (CDL's hand-written autograd Functions) and its gradients on CUDA against the CPU, in fp32 and
    under bf16 autocast, for one batch of the training windows (eval mode: no dropout)."""
    from modalrec.data.batching import train_batches, train_windows

    net, prep, r = load_run(p, root, "kdsr_sasrec", "cpu")
    w = train_windows(prep.sequences, np.asarray(prep.n_train), r.max_len)
    batch = next(iter(train_batches(w, 64, seed=0, epoch=1)))

    def loss_and_grads(device: str, amp: bool):
        net.to(device).eval()
        net.on_fit_start(w)  # the teacher's answers for the windows' pairs, cached on this device
        net.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net.loss(batch.to(device))
        out["loss"].backward()
        grads = {n: q.grad.detach().float().cpu() for n, q in net.named_parameters() if q.grad is not None}
        return {k: float(v) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}, grads

    (ref, gref), s_cpu = timed(loss_and_grads, "cpu", False)
    row("KDSR loss + backward (CDL)", "cpu", s_cpu, f"loss {ref['loss']:.5f}")
    for amp in (False, True):
        (got, g), s = timed(loss_and_grads, dev, amp)
        worst = max(float((g[n] - gref[n]).abs().max() / (gref[n].abs().max() + 1e-12)) for n in gref)
        row(f"KDSR loss + backward (CDL, {'bf16' if amp else 'fp32'})", dev, s,
            f"loss {got['loss']:.5f} vs CPU {ref['loss']:.5f}; worst relative grad difference {worst:.2e}")


def check_encode_precision(p: dict, root: Path, dev: str = "cuda") -> None:
    from modalrec.encode.cache import load_features
    from modalrec.stages import encode

    q = copy.deepcopy(p)
    q["encode"]["text"]["precision"] = "fp32"
    _, s = timed(encode.run, q, "text", prepared_root=root / "data" / "prepared", features_root=root / "fp32",
                 progress=False)
    n = json.loads((root / "data" / "prepared" / DS / "stats.json").read_text())["items"]
    a, has, _ = load_features(root / "data" / "features" / DS / "text.parquet", n)
    b, _, _ = load_features(root / "fp32" / DS / "text.parquet", n)
    cos = (a * b).sum(1)[1:][has[1:]] / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)[1:][has[1:]]
    row("encode text (fp32) vs bf16", dev, s, f"cosine min {cos.min():.4f}, mean {cos.mean():.4f}")


def check_ddp(p: dict, root: Path) -> None:
    from modalrec.stages import train

    q = copy.deepcopy(p)
    q["train"]["nproc"] = 2
    q["models"]["sasrec"]["train"] = {"epochs": 1}
    out, s = timed(train.run, q, "sasrec", data_root=root / "data", models_root=root / "ddp", progress=False)
    h = json.loads((Path(out) / "history.json").read_text())
    row("train sasrec, DDP 2 GPUs (NCCL)", "cuda", s, f"valid ndcg@10 {h[-1]['valid/ndcg@10']:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run the CPU fallbacks even when CUDA is present")
    ap.add_argument("--quick", action="store_true", help="prepare, the baselines and the evaluation checks only")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    use_cuda = torch.cuda.is_available() and not args.cpu
    dev = "cuda" if use_cuda else "cpu"
    print(f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))" if use_cuda else "")
          + f"; running on {dev}", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        p = check_params(use_cuda)
        run_stages(p, root, dev, args.quick)
        check_evaluation(p, root, use_cuda)
        if args.quick:
            skip("encoders, teacher, KDSR, ODMT", "--quick")
        elif use_cuda:
            check_encode_precision(p, root)
            check_cdl(p, root)
        else:
            skip("encode bf16 vs fp32", "no CUDA (CPU encodes in fp32)")
            skip("CDL autograd Functions on CUDA vs CPU", "no CUDA")
        if use_cuda and torch.cuda.device_count() >= 2:
            check_ddp(p, root)
        else:
            skip("DDP over 2 GPUs (NCCL)", "fewer than 2 CUDA devices (gloo DDP: tests/train/test_ddp.py)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    peak = f"; peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if use_cuda else ""
    print(f"\n{len(ROWS)} checks ran on {dev} in {time.perf_counter() - t0:.1f} s{peak}; {len(SKIPPED)} skipped")
    for s in SKIPPED:
        print(f"  skipped: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
