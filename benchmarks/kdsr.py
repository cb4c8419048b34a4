"""What CDL adds to a backbone's training: time per epoch and the size of the pair tensors.

Data: the Amazon-2014 Beauty sequences from ../shared (22,363 users, 12,101 items; KDSR's ratio split, the last 20%
of every sequence is test), max length 50, batch 64 windows, SASRec / GRU4Rec (d = 64 as params.yaml, ``--dim 128``
as the paper; ``item_repr: tuned``) and
the released code's graph backbone. Beauty has no features here, so m̃ is a seeded random sigmoid code per item
(128-d as params.yaml ``compress.dim``; ``--mdim 64`` gives the tuned modality tables and CDL's heads the width of a
d = 64 backbone): the cost of CDL does not depend on the values. The teacher is the real distill-stage teacher
(``modalrec.teacher.teacher.fit_teacher``) fitted on those codes and the training sequences (D = 8, x = 100 as the
``kdsr`` preset; ``--codes 50`` for the released code's x).

For each backbone, the same batches go through the backbone alone and through ``kdsr`` on that backbone
(interleaved, so machine contention hits both alike); one training step = forward + backward + Adam step. As the
trainer does, the model's ``on_fit_start`` first asks the teacher about every pair of every training window
(``CDL.prefill``; its time is printed as "setup", and epoch 1 with it); then two passes: the first is epoch 1, the
second every later epoch (the same batches again; ``--passes`` pools several). With ``--no-prefill``, epoch 1 asks
the teacher about every new pair batch by batch and caches the answers, as it does without the trainer. Prints
the time per step of each (mean, and the median of the per-batch ratios, which is robust to bursts of contention),
the extrapolated time per epoch, the overhead of CDL (target: <= 20%) and, per batch, the size of the pair lists
CDL works on (the i <= j pairs of each sequence's unique items: O(sum of U_b^2), bounded by the batch's longest
sequence) against a dense ``[B, U, U]`` layout (U = most unique items of a sequence in the batch) and N×N.

``--layouts`` times the graph backbones instead (``mmsr``, ``kdsr_graph``; alone and under ``kdsr``): their flat
node/neighbour-list computation (``SessionGraphs``) against the padded ``[B, U, U]`` layout they used before (the
reference kept in tests/kdsr/graph_reference.py), on the same batches, interleaved, each step seeded alike so both
draw the same dropout masks (the largest difference of their losses is printed: float rounding only). Prints ms per
step, s per epoch, training sequences (windows) per second and the speedup (mean, and median of per-batch ratios).
``--data`` takes a prepared dataset directory instead of Beauty, e.g. ``data/prepared/synthetic`` (the pipeline's
default dataset: its windows and its split's training parts).

The +CDL side takes the CDL options of a params.yaml preset (``--preset kdsr``: weights, holistic form, norm,
sampled code-head pairs, supervised representation) and the teacher's ``kdsr.center``. ``--terms`` prints, instead
of timings, every CDL term's gradient norm on the tables relative to the recommendation loss's at initialisation,
for each holistic form x norm x teacher centring x representation (issue 18; uses data/compressed/<name>/ when
present). Issue 18's figures: ``--data data/prepared/ml100k --dim 128`` (long histories) and
``--data data/prepared/synthetic --dim 128``, the comparison's width.

Usage: python benchmarks/kdsr.py [--batches 30] [--passes 1] [--batch 64] [--dim 64] [--mdim 128] [--codes 100]
                                 [--threads N] [--backbones sasrec gru4rec kdsr_graph] [--preset kdsr]
                                 [--form soft_match|sigmoid_match|frobenius] [--no-prefill] [--data beauty|DIR]
                                 [--layouts] [--terms]
Figures measured on a shared, busy machine are inflated by contention.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads on a busy CPU

import numpy as np
import torch

from modalrec.data.batching import train_batches, train_windows
from modalrec.data.prepared import load_prepared
from modalrec.losses.cdl import sequence_pairs, unique_items
from modalrec.models import ModelContext, build_model
from modalrec.teacher.teacher import TeacherConfig, fit_teacher  # the distill stage's API
from modalrec.train.trainer import deterministic_on_cpu

from _beauty import BEAUTY, load_beauty  # noqa: E402  (benchmarks/ is the script directory)

MAXLEN = 50


def build_teacher(compressed: dict[str, torch.Tensor], sequences: list[np.ndarray], D: int, x: int, pairs: int,
                  seed: int = 0, center: bool = False):
    cfg = TeacherConfig(D=D, codes=x, quantizer="kmeans", xi="cos", pairs_cooccur=pairs, pairs_random=pairs, seed=seed,
                        center=center)
    teacher, _ = fit_teacher(compressed, sequences, cfg, progress=False)
    return teacher


def step_fn(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        out = model.loss(batch)
        loss = out["loss"] if isinstance(out, dict) else out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def load_data(spec: str) -> tuple[str, list[np.ndarray], np.ndarray, int]:
    """(name, sequences, training-part lengths, N): Beauty with KDSR's ratio split, or a prepared dataset directory."""
    if spec == "beauty":
        if not BEAUTY.exists():
            sys.exit(f"Beauty sequences not found at {BEAUTY}")
        seqs, n = load_beauty()
        lens = np.array([len(s) for s in seqs])
        return "Beauty", seqs, lens - (lens * 0.2).astype(int), n
    p = load_prepared(spec)
    return Path(spec).name, list(p.sequences), np.asarray(p.n_train), p.n_items


def time_layouts(backbones: list[str], cfgs: dict, ctx: ModelContext, windows, batches, n_batches: int,
                 passes: int, weights: dict, form: str) -> None:
    """Flat (SessionGraphs) vs padded layout of the graph backbones, alone and under kdsr, interleaved."""
    spec = importlib.util.spec_from_file_location(
        "graph_reference", Path(__file__).resolve().parents[1] / "tests" / "kdsr" / "graph_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    print(f"{'model':<16} {'padded ms/step':>14} {'flat ms/step':>12} {'padded s/epoch':>14} {'flat s/epoch':>12} "
          f"{'padded seq/s':>12} {'flat seq/s':>10} {'speedup':>8} {'median':>7} {'max |dloss|':>11}")
    for bb in backbones:
        kd_name = {"mmsr": "kdsr_mmsr", "kdsr_graph": "kdsr_graph_cdl"}[bb]  # as params.yaml's models
        for name, arch, cfg in ((bb, bb, cfgs[bb]), (kd_name, "kdsr", {
                "backbone": bb, "backbone_cfg": cfgs[bb], "holistic_loss": form, "weights": weights})):
            steps = []
            for padded in (True, False):
                torch.manual_seed(0)
                model = build_model(arch, cfg, ctx).train()
                if padded:
                    reference.use_reference(model, bb)
                model.on_fit_start(windows)
                steps.append(step_fn(model))
            for step in steps:  # warm-up
                torch.manual_seed(0)
                step(batches[0])
            times, losses, n_seq = [[], []], [[], []], 0
            for i, b in enumerate([b for _ in range(passes) for b in batches[1:]]):
                for k, step in enumerate(steps):
                    torch.manual_seed(1000 + i)  # both draw the same dropout masks
                    t = time.perf_counter()
                    losses[k].append(float(step(b)))
                    times[k].append(time.perf_counter() - t)
                n_seq += b.input_ids.shape[0]
            (tp, tf), (lp, lf) = np.asarray(times), np.asarray(losses)
            mp, mf = tp.mean(), tf.mean()
            print(f"{name:<16} {mp * 1e3:>14.1f} {mf * 1e3:>12.1f} {mp * n_batches:>14.1f} {mf * n_batches:>12.1f} "
                  f"{n_seq / tp.sum():>12.0f} {n_seq / tf.sum():>10.0f} {mp / mf:>7.2f}x {np.median(tp / tf):>6.2f}x "
                  f"{np.abs(lp - lf).max():>11.1e}", flush=True)


def term_table(ctx_for, windows, dim: int, seeds: int = 1) -> None:
    """``--terms``: every weighted CDL term's gradient norm on the modality tables relative to the recommendation
    loss's (KDSR.term_sizes on a fixed batch of training windows, at initialisation), for each holistic form x
    teacher centring x supervised representation, at the ``kdsr`` preset's weights (1, 0.5)."""
    from modalrec.models.kdsr import NEGLIGIBLE

    print(f"{'form':<14} {'norm':<6} {'teacher':<9} {'CDL on':<7} " + " ".join(f"{k:>15}" for k in (
        "img_hol", "img_code", "txt_hol", "txt_code")) + "   (gradient norm / rec loss's, on the tables; rec loss)")
    for center in (False, True):
        ctx = ctx_for(center)
        for form, norm in (("soft_match", "pairs"), ("sigmoid_match", "pairs"), ("sigmoid_match", "rows"),
                           ("frobenius", "pairs"), ("frobenius", "rows")):
            for rep in ("raw", "scored"):
                vals, recs = [], []
                for sd in range(seeds):
                    torch.manual_seed(sd)
                    kd = build_model("kdsr", {"backbone": "sasrec", "holistic_loss": form, "represent": rep,
                                              "norm": norm,
                                              "backbone_cfg": {"dim": dim, "layers": 2, "heads": 1, "dropout": 0.2},
                                              "weights": {"image": [1.0, 0.5], "text": [1.0, 0.5]}}, ctx)
                    kd.cdl.cache.max_pairs = 0
                    kd.on_fit_start(windows)
                    kd.eval()
                    t = kd.term_sizes()
                    vals.append([t[f"terms/{m}_{k}_grad_ratio"] for m in ("image", "text")
                                 for k in ("holistic", "code")])
                    recs.append(t["terms/rec"])
                v = np.mean(vals, 0)
                flag = ["!" if x < NEGLIGIBLE else " " for x in v]
                print(f"{form:<14} {norm:<6} {'centred' if center else 'raw m~':<9} {rep:<7} " + " ".join(
                    f"{x:>14.2e}{f}" for x, f in zip(v, flag)) + f"   rec {np.mean(recs):.2f}", flush=True)
    print(f"(! = under {NEGLIGIBLE:.0%} of the recommendation loss's gradient)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--passes", type=int, default=1, help="passes like the later epochs, pooled (more samples: the "
                    "host's speed drifts, so one pass of 30-40 batches is good to about +-3 points)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64, help="windows per batch (train.batch_size; KDSR's code: 256)")
    ap.add_argument("--codes", type=int, default=100, help="teacher codewords x (kdsr preset 100; released code 50)")
    ap.add_argument("--teacher-pairs", type=int, default=200_000, help="co-occurring and random pairs for the codebook")
    ap.add_argument("--form", default=None, choices=["soft_match", "sigmoid_match", "frobenius"],
                    help="holistic form (default: the params.yaml kdsr preset's)")
    ap.add_argument("--preset", default="kdsr", help="the params.yaml kdsr.presets entry whose CDL options (weights, "
                    "holistic_loss, norm, code_pairs, represent, ...) the +CDL side uses; its teacher centring is "
                    "kdsr.center")
    ap.add_argument("--backbones", nargs="+", default=None,
                    help="of sasrec gru4rec kdsr_graph mmsr (default sasrec gru4rec kdsr_graph; with "
                    "--layouts mmsr kdsr_graph)")
    ap.add_argument("--no-prefill", action="store_true", help="skip the trainer's on_fit_start (CDL.prefill): epoch 1 "
                    "then asks the teacher batch by batch")
    ap.add_argument("--dim", type=int, default=64, help="SASRec/GRU4Rec width (params.yaml kdsr.backbones: 64; the "
                    "paper: 128 for every model)")
    ap.add_argument("--data", default="beauty", help="beauty (../shared), or a prepared dataset directory such as "
                    "data/prepared/synthetic")
    ap.add_argument("--prefixes", type=int, default=None, help="graph backbones: train on this many prefixes a "
                    "window (their `prefixes` option; default every prefix)")
    ap.add_argument("--layouts", action="store_true", help="time the graph backbones' flat layout against the "
                    "padded one it replaced (alone and under kdsr) instead of CDL's overhead")
    ap.add_argument("--mdim", type=int, default=128, help="width of m~, so of the tuned modality tables, the CDL heads "
                    "and kdsr_graph (params.yaml compress.dim: 128; kdsr.D must divide it)")
    ap.add_argument("--terms", action="store_true", help="print every CDL term's gradient size relative to the "
                    "recommendation loss's (at initialisation; forms x teacher centring x representation) instead "
                    "of timings; uses data/compressed/<name>/ when present")
    a = ap.parse_args()
    from modalrec.losses.cdl import CDLConfig
    from modalrec.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    preset = params["kdsr"]["presets"][a.preset]
    cdl_opts = {k: v for k, v in preset.items() if k in CDLConfig.__dataclass_fields__ or k == "represent"}
    if a.form:
        cdl_opts["holistic_loss"] = a.form
    center = bool(params["kdsr"].get("center", False))
    BATCH, DIM = a.batch, a.mdim
    D = TeacherConfig.D  # the kdsr.D default
    if DIM % D:
        sys.exit(f"--mdim {DIM}: the teacher's D = {D} parts must divide it")
    if a.threads:
        torch.set_num_threads(a.threads)
    data_name, seqs, n_train, n = load_data(a.data)
    windows = train_windows(seqs, n_train, MAXLEN)
    n_batches = -(-len(windows) // BATCH)
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.sigmoid(torch.randn(n + 1, DIM, generator=g) * 2) for m in ("image", "text")}
    for c in comp.values():
        c[0] = 0
    real = Path("data/compressed") / data_name
    if a.terms and all((real / f"{m}.parquet").exists() for m in comp):
        from modalrec.encode.cache import load_features

        comp = {m: torch.from_numpy(load_features(real / f"{m}.parquet", n)[0]) for m in comp}
        print(f"m~: the compress stage's codes in {real}")
    if a.terms:
        train = [q[:t] for q, t in zip(seqs, n_train)]

        def ctx_for(center: bool) -> ModelContext:
            cfg = TeacherConfig(D=D, codes=a.codes, quantizer="kmeans", xi="cos", pairs_cooccur=a.teacher_pairs,
                                pairs_random=a.teacher_pairs, seed=0, center=center)
            return ModelContext(n_items=n, max_len=MAXLEN, compressed=comp,
                                teacher=fit_teacher(comp, train, cfg, progress=False)[0])

        print(f"{data_name}: {len(windows):,} training windows; backbone d = {a.dim}")
        term_table(ctx_for, windows, a.dim)
        return
    t0 = time.perf_counter()
    teacher = build_teacher(comp, [q[:t] for q, t in zip(seqs, n_train)], D, a.codes, a.teacher_pairs, center=center)
    print(f"{data_name}: {len(seqs):,} users, {n:,} items, {len(windows):,} training windows = {n_batches} batches of "
          f"{BATCH}; teacher fitted in {time.perf_counter() - t0:.1f}s; threads={torch.get_num_threads()}; "
          f"backbone d = {a.dim}, m~ = {DIM}; +CDL: preset {a.preset!r} {cdl_opts}, teacher centred: {center}")
    ctx = ModelContext(n_items=n, max_len=MAXLEN, compressed=comp, teacher=teacher)
    batches = [b for _, b in zip(range(a.batches + 1), train_batches(windows, BATCH, seed=0, epoch=1))]

    # pair-tensor sizes: bounded by each batch's longest sequence, not by N
    worst = max(batches, key=lambda b: int((b.input_ids > 0).sum(1).max()))
    for name, b in (("typical", batches[0]), ("longest", worst)):
        U = unique_items(b.input_ids).shape[1]
        pairs = sequence_pairs(b.input_ids)
        P, K = pairs.i.shape[0], pairs.items.shape[0]
        L = int((b.input_ids > 0).sum(1).max())
        B = b.input_ids.shape[0]
        print(f"pairs ({name} batch): longest sequence {L}, {K:,} unique items in {B} sequences, i<=j pairs {P:,} "
              f"(code-head input {P * DIM * 4 / 2**20:.1f} MiB fp32); a dense [B,U,U] layout would have "
              f"{B * U * U:,} entries (U = {U}); B*L*L = {B * L * L:,}; N*N = {n * n:,}")

    cfgs = {"sasrec": {"dim": a.dim, "layers": 2, "heads": 1, "dropout": 0.2},
            "gru4rec": {"dim": a.dim, "hidden": 128, "dropout": 0.3},
            "kdsr_graph": {"dim": DIM},  # the graph backbones as params.yaml kdsr.backbones (dim = the width of m~)
            "mmsr": {"dim": DIM, "layers": 1, "q": 3, "dropout_atten": 0.2, "dropout_local": 0.4}}
    for bb in ("kdsr_graph", "mmsr"):
        cfgs[bb]["prefixes"] = a.prefixes
    if a.layouts:
        graphs = [bb for bb in a.backbones or ["mmsr", "kdsr_graph"] if bb in ("mmsr", "kdsr_graph")]
        time_layouts(graphs, cfgs, ctx, windows, batches, n_batches, a.passes,
                     cdl_opts.get("weights", {"image": [1.0, 0.5], "text": [1.0, 0.5]}),
                     cdl_opts.get("holistic_loss", "soft_match"))
        return
    print(f"{'backbone':<12} {'pass':<8} {'alone ms/step':>14} {'+CDL ms/step':>13} {'alone s/epoch':>14} "
          f"{'+CDL s/epoch':>13} {'overhead':>9} {'median':>7}")
    for bb in a.backbones or ["sasrec", "gru4rec", "kdsr_graph"]:
        torch.manual_seed(0)
        bcfg = dict(cfgs[bb])
        if bb in ("sasrec", "gru4rec"):
            plain = build_model(bb, {**bcfg, "item_repr": "tuned", "modalities": ["image", "text"]}, ctx)
        else:
            plain = build_model(bb, bcfg, ctx)
        torch.manual_seed(0)
        kd = build_model("kdsr", {**cdl_opts, "backbone": bb, "backbone_cfg": bcfg}, ctx)
        plain.train()
        kd.train()
        s_plain, s_kd = step_fn(plain), step_fn(kd)
        setup = 0.0
        if not a.no_prefill:  # as the trainer does before epoch 1: the teacher's answers for every training pair
            t = time.perf_counter()
            kd.on_fit_start(windows)
            setup = time.perf_counter() - t
        s_plain(batches[0])
        s_kd(batches[0])  # warm-up
        # pass 1 = the first epoch (with --no-prefill, CDL's pair cache fills with the teacher's answers batch by
        # batch); pass 2 = the same batches again, as every later epoch sees them (the answers come from the cache)
        for name, passes in (("epoch 1", 1), ("later", a.passes)):
            tp, tk = [], []
            for b in [b for _ in range(passes) for b in batches[1:]]:
                t = time.perf_counter()
                s_plain(b)
                tp.append(time.perf_counter() - t)
                t = time.perf_counter()
                s_kd(b)
                tk.append(time.perf_counter() - t)
            mp, mk = float(np.mean(tp)), float(np.mean(tk))
            med = float(np.median(np.asarray(tk) / np.asarray(tp)))
            print(f"{bb:<12} {name:<8} {mp * 1e3:>14.1f} {mk * 1e3:>13.1f} {mp * n_batches:>14.1f} "
                  f"{mk * n_batches:>13.1f} {(mk / mp - 1) * 100:>8.1f}% {(med - 1) * 100:>6.1f}%", flush=True)
            if name == "epoch 1" and setup:
                with_setup = (mk * n_batches + setup) / (mp * n_batches) * 100 - 100
                print(f"{bb:<12} {'setup':<8} the teacher's answers for {len(kd.cdl.cache):,} training pairs: "
                      f"{setup:.2f} s once; epoch 1 with it: +{with_setup:.1f}%", flush=True)
    print("(target: CDL adds <= 20% per epoch; timings on a shared machine are inflated by contention)")


if __name__ == "__main__":
    with deterministic_on_cpu(torch.device("cpu")):  # the kernels the trainer uses on CPU
        main()
