"""Distill stage: ``kdsr.{D, codes, quantizer, xi, pairs, quantizer_options}`` + m̃ -> ``models/<ds>/teacher/``.

Fits one codebook per compressed modality on a seeded sample of item pairs (co-occurring in training sequences plus
random pairs) and writes ``teacher.pt`` (codebooks), ``config.json`` (ξ, D, x, fingerprints of the m̃ it was fitted on)
and ``stats.json`` (code usage histogram, perplexity, dead codes, quantisation error, AE reconstruction error).
Training looks pairs up on the fly through :class:`modalrec.teacher.teacher.Teacher`; nothing N×N is stored.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import wall_seconds
from ..data.prepared import load_prepared
from ..encode.cache import load_features
from ..errors import DataError
from ..io import atomic_dir, read_json
from ..params import get
from ..teacher.teacher import TeacherConfig, fit_teacher


def output_dir(dataset: str, models_root: str | Path = "models") -> Path:
    return Path(models_root) / dataset / "teacher"


def run(params: dict, dataset: str | None = None, data_root: str | Path = "data", models_root: str | Path = "models",
        progress: bool = True) -> Path:
    ds = dataset or get(params, "base.dataset")
    cfg = TeacherConfig.from_params(dict(get(params, "kdsr")))
    mods = list(get(params, "compress.modalities", ["image", "text"]))
    prepared = load_prepared(Path(data_root) / "prepared" / ds)
    compressed, skipped, ae = {}, [], {}
    for m in mods:
        path = Path(data_root) / "compressed" / ds / f"{m}.parquet"
        z, has, _ = load_features(path, prepared.n_items)
        if not has.any():
            skipped.append(m)
            continue
        compressed[m] = torch.from_numpy(z)
        info = Path(models_root) / ds / "ae" / f"{m}.json"
        if info.is_file():
            ae[m] = {k: v for k, v in read_json(info).items()
                     if k in ("reconstruction_mse", "reconstruction_mse_relative", "best_epoch", "epochs_run")}
    if not compressed:
        raise DataError(f"no compressed modality of {ds} has any feature; nothing to distill",
                        path=Path(data_root) / "compressed" / ds)
    train = [s[:k] for s, k in zip(prepared.sequences, prepared.n_train)]
    teacher, stats = fit_teacher(compressed, train, cfg, progress=progress)
    stats["dataset"] = ds
    stats["skipped_modalities"] = skipped
    for m, a in ae.items():
        stats["modalities"][m]["autoencoder"] = a
    out = output_dir(ds, models_root)
    with atomic_dir(out) as tmp:  # never a half-written teacher
        teacher.save(tmp, stats)
    parts = ", ".join(f"{m} perplexity {s['perplexity']:.1f}/{cfg.codes} ({s['dead_codes']} dead)"
                      for m, s in stats["modalities"].items())
    print(f"distill {ds}: {cfg.quantizer} x={cfg.codes} D={cfg.D} xi={cfg.xi} on {stats['pairs']['total']:,} pairs; "
          f"{parts}; {stats['seconds']:.1f} s" + (f"; skipped {skipped} (no features)" if skipped else "")
          + f" | wall {wall_seconds():.1f} s")
    return out
