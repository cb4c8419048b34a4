"""Compress stage: ``compress.*`` params + ``data/features/<ds>/<m>.parquet`` -> the AE codes m̃.

Writes ``data/compressed/<ds>/<m>.parquet`` (the feature-cache schema with d = ``compress.dim``; items without a
feature keep a zero vector and ``has_feature = false``) and ``models/<ds>/ae/<m>.pt`` (state dict) + ``<m>.json``
(config and reconstruction error). Reads no ``kdsr.*`` parameter: fine-tuned baselines initialise from m̃ too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from .. import wall_seconds
from ..encode.cache import load_features, write_features
from ..errors import ParamError
from ..io import write_json
from ..params import get
from ..teacher.autoencoder import AEConfig, config_dict, encode_all, fit_autoencoder
from ..train.checkpoint import save

MODALITIES = ("image", "text")


def outputs(dataset: str, modality: str, data_root: str | Path = "data", models_root: str | Path = "models"
            ) -> dict[str, Path]:
    return {"codes": Path(data_root) / "compressed" / dataset / f"{modality}.parquet",
            "weights": Path(models_root) / dataset / "ae" / f"{modality}.pt",
            "info": Path(models_root) / dataset / "ae" / f"{modality}.json"}


def run(params: dict, modality: str, dataset: str | None = None, data_root: str | Path = "data",
        models_root: str | Path = "models", progress: bool = True) -> Path:
    section = dict(get(params, "compress"))
    mods = section.get("modalities", list(MODALITIES))
    if modality not in MODALITIES or modality not in mods:
        raise ParamError("compress.modalities", f"{modality!r} is not one of the compressed modalities {mods}")
    ds = dataset or get(params, "base.dataset")
    seed = section.get("seed", 2023)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParamError("compress.seed", f"must be an integer, got {seed!r}")
    cfg = AEConfig.from_params(section)
    src = Path(data_root) / "features" / ds / f"{modality}.parquet"
    x, has, meta = load_features(src)
    n = len(x) - 1
    out = outputs(ds, modality, data_root, models_root)
    codes = np.zeros((n, cfg.dim), dtype=np.float32)
    rows = np.flatnonzero(has[1:])
    info: dict = {"modality": modality, "dataset": ds, "seed": seed, "source": str(src),
                  "source_meta": {k: meta.get(k) for k in ("family", "weights", "pooling", "dim", "template")},
                  "n_items": n, "n_with_feature": int(len(rows)), "config": config_dict(cfg, x.shape[1])}
    if len(rows):
        res = fit_autoencoder(x[1:][rows], cfg, seed, progress=progress, desc=f"compress {modality}")
        codes[rows] = encode_all(res.model, x[1:][rows])
        info.update(res.summary())
        state = res.model.state_dict()
    else:  # e.g. a dataset without images: nothing to learn, every code is the zero vector
        print(f"compress {modality}: no item of {ds} has a {modality} feature; writing zero codes | wall {wall_seconds():.1f} s")
        state = {}
    save(out["weights"], state)
    write_json(out["info"], info)
    write_features(out["codes"], codes, has[1:], {
        "stage": "compress", "dataset": ds, "modality": modality, "family": "autoencoder", "pooling": "sigmoid",
        "source": str(src), "source_meta": info["source_meta"], "ae": config_dict(cfg, x.shape[1]), "seed": seed})
    if len(rows):
        print(f"compress {modality}: {len(rows):,}/{n:,} items {x.shape[1]} -> {cfg.dim} d, reconstruction MSE "
              f"{info['reconstruction_mse']:.5f} ({100 * info['reconstruction_mse_relative']:.1f}% of the variance), "
              f"best epoch {info['best_epoch']}/{info['epochs_run']}, {info['seconds']:.1f} s | wall {wall_seconds():.1f} s")
    return out["codes"]
