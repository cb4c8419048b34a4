"""Training and evaluation throughput of the engine's backbones on the current device.

Data: the Amazon-2014 Beauty sequences from ../shared (22,363 users, 12,101 items; KDSR's ratio split, the last 20%
of every sequence is test), max length 50, d = 64. Prints per backbone:

- training: sequences/s and training targets/s of the engine's all-position scheme, and the time of one epoch over
  every training target;
- the same for a faithful re-implementation of **RecBole's** SASRec scheme (recbole is not installed here): one
  instance per prefix (prefix -> next item), right-padded to the full max length, post-LN Transformer (hidden 64,
  inner 256, 2 layers, 2 heads, GELU, dropout 0.5), CE on the last position only, same batch size;
- evaluation: full ranking of every item for every test instance (ratio split) and for every user's last item
  (leave-one-out, one instance per user = all 22k users), with scores/s.

The papers' other baselines (docs/baselines.md: srgnn, nextitnet, nova_pos, fdsa, unisrec, difsr, nova, trans2d,
mmsrec) are timed the same way
with their params.yaml defaults (``--models`` picks the list). Beauty has no item text or images here, so the
modality models run on random stand-in features of the default encoders' widths (text 384, image 1280): their
figures are throughput only.

Usage: python benchmarks/train.py [--seconds 20] [--batch-size 256] [--threads N] [--models sasrec srgnn ...]
Figures measured on a shared, busy machine are inflated by contention.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import modalrec  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch
from torch import nn

from modalrec.data.batching import eval_instances, train_batches, train_windows
from modalrec.evaluate.protocol import EvalConfig, evaluate
from modalrec.models import ModelContext, build_model
from modalrec.params import load_params

from _beauty import BEAUTY, load_beauty  # noqa: E402  (benchmarks/ is the script directory)

MAXLEN = 50
ENGINE = {"sasrec": ("sasrec", {"dim": 64, "layers": 2, "heads": 1}),
          "gru4rec": ("gru4rec", {"dim": 64, "hidden": 128})}
PAPER_BASELINES = ["srgnn", "nextitnet", "nova_pos", "fdsa", "unisrec", "difsr", "nova", "trans2d", "mmsrec"]
STAND_IN_WIDTH = {"text": 384, "image": 1280}  # all-MiniLM-L6-v2, efficientnet_lite0 pooled


def model_entry(name: str) -> tuple[str, dict]:
    """(arch, options) of a model: the engine's two fixed settings, or a params.yaml entry."""
    if name in ENGINE:
        return ENGINE[name]
    cfg = dict(load_params(Path(__file__).resolve().parents[1] / "params.yaml")["models"][name])
    cfg.pop("train", None), cfg.pop("evaluate", None)
    return cfg.pop("arch"), cfg



def time_training(step, batches, seconds: float) -> tuple[float, int, int, int]:
    """Run ``step`` on batches (cycling) for about ``seconds``; returns (elapsed, steps, sequences, targets)."""
    n_steps = n_seq = n_tgt = 0
    it = iter(batches())
    step(next(it))  # warm-up
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            b = next(it)
        except StopIteration:
            it = iter(batches())
            b = next(it)
        s, t = step(b)
        n_steps += 1
        n_seq += s
        n_tgt += t
    return time.perf_counter() - t0, n_steps, n_seq, n_tgt


class RecBoleSASRec(nn.Module):
    """RecBole's SASRec forward/loss (sasrec.py): right padding to max_len, post-LN blocks, last-position CE."""

    def __init__(self, n_items: int, d: int = 64, layers: int = 2, heads: int = 2, inner: int = 256,
                 dropout: float = 0.5, max_len: int = MAXLEN):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d, heads, inner, dropout, activation="gelu", batch_first=True,
                                           norm_first=False, layer_norm_eps=1e-12)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.max_len = max_len

    def loss(self, seq: torch.Tensor, lens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        L = seq.shape[1]
        x = self.drop(self.ln(self.item(seq) + self.pos(torch.arange(L))))
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        h = self.enc(x, mask=causal, src_key_padding_mask=None)  # RecBole: extended causal+padding additive mask
        out = h[torch.arange(len(lens)), lens - 1]
        logits = out @ self.item.weight.t()
        return nn.functional.cross_entropy(logits, target)


def recbole_instances(seqs, n_train) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One instance per training prefix, right-padded to MAXLEN (RecBole's sequential augmentation)."""
    rows, lens, tg = [], [], []
    for s, nt in zip(seqs, n_train):
        for p in range(1, int(nt)):
            h = s[max(0, p - MAXLEN):p]
            rows.append(np.pad(h, (0, MAXLEN - len(h))))
            lens.append(len(h))
            tg.append(s[p])
    return np.stack(rows), np.asarray(lens), np.asarray(tg)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed training seconds per scheme")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", *PAPER_BASELINES])
    a = ap.parse_args(argv)
    if not BEAUTY.exists():
        print(f"skipped: {BEAUTY} is absent")
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seqs, n_items = load_beauty()
    lens = np.array([len(s) for s in seqs])
    n_test = (lens * 0.2).astype(int).clip(min=1)
    n_train, n_valid = lens - n_test, np.zeros_like(lens)
    windows = train_windows(seqs, n_train, MAXLEN)
    print(f"device: {dev} ({torch.get_num_threads()} threads); Beauty: {len(seqs)} users, {n_items} items, "
          f"{windows.n_targets} training targets in {len(windows)} sequences; batch {a.batch_size}")
    g = torch.Generator().manual_seed(0)
    stand_in = {m: torch.randn(n_items + 1, d, generator=g) for m, d in STAND_IN_WIDTH.items()}
    for v in stand_in.values():
        v[0] = 0
    ctx = ModelContext(n_items=n_items, max_len=MAXLEN, features=stand_in, device=dev)

    test = eval_instances(seqs, n_train, n_valid, "test", MAXLEN)
    loo_nt = lens - 1
    loo = eval_instances(seqs, loo_nt, np.zeros_like(lens), "test", MAXLEN)
    results = {}
    for name in a.models:
        arch, cfg = model_entry(name)
        torch.manual_seed(0)
        model = build_model(name, cfg, ctx, arch=arch).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(b):
            b = b.to(dev)
            out = model.loss(b)
            loss = out["loss"] if isinstance(out, dict) else out
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return b.input_ids.shape[0], int((b.targets > 0).sum())

        el, st, ns, nt = time_training(step, lambda: train_batches(windows, a.batch_size, 0, 1), a.seconds)
        epoch_s = windows.n_targets / (nt / el)
        results[name] = epoch_s
        print(f"{name:>8} train (all positions): {ns / el:8.0f} sequences/s, {nt / el:8.0f} targets/s, "
              f"epoch ~{epoch_s:.1f}s")
        model.eval()
        for split, inst in (("ratio-split test", test), ("leave-one-out, every user", loo)):
            evaluate(model, inst, EvalConfig(batch_size=512), dev, n_items, progress=False)  # warm-up
            res = evaluate(model, inst, EvalConfig(batch_size=512), dev, n_items, progress=False)
            print(f"{name:>8} eval {split}: {len(inst)} instances x {n_items} items in {res.seconds:.2f}s "
                  f"({res.scores_per_second / 1e6:.0f}M scores/s)")

    if "sasrec" not in results:
        return 0
    torch.manual_seed(0)
    rb = RecBoleSASRec(n_items).to(dev)
    opt = torch.optim.Adam(rb.parameters(), lr=1e-3)
    rows, rlens, rtg = recbole_instances(seqs, n_train)
    rows_t, lens_t, tg_t = map(torch.from_numpy, (rows, rlens, rtg))
    perm = np.random.default_rng(0).permutation(len(rows))

    def rb_batches():
        for s in range(0, len(perm), a.batch_size):
            idx = torch.from_numpy(perm[s:s + a.batch_size])
            yield rows_t[idx], lens_t[idx], tg_t[idx]

    def rb_step(b):
        seq, ln, tg = (x.to(dev) for x in b)
        loss = rb.loss(seq, ln, tg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return seq.shape[0], seq.shape[0]

    el, st, ns, nt = time_training(rb_step, rb_batches, a.seconds)
    rb_epoch = len(rows) / (nt / el)
    print(f"RecBole-scheme SASRec (one instance per prefix, re-implemented): {ns / el:8.0f} instances/s "
          f"(= targets/s), epoch ~{rb_epoch:.1f}s")
    print(f"summary: SASRec epoch {results['sasrec']:.1f}s vs RecBole scheme {rb_epoch:.1f}s -> "
          f"{rb_epoch / results['sasrec']:.1f}x faster per epoch over the same training targets")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
