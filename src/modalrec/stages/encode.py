"""Encode stage: ``encode.<modality>`` params + ``data/prepared/<ds>/items.parquet`` -> ``data/features/<ds>/``.

One call encodes one modality entry, so each DVC stage depends only on its own ``encode.<modality>`` params:
``image`` / ``text`` write pooled Parquet caches, ``image_tokens`` / ``text_tokens`` write ODMT's token caches.
``encode.<modality>.nproc: K`` launches K data-parallel processes (GPUs) that share the batches; rank 0 writes the
one cache, identical to a single process's (:mod:`modalrec.encode.runner`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .. import wall_seconds
from ..encode.registry import EncoderConfig, pick_device
from ..encode.runner import encode_catalogue
from ..errors import DataError, ParamError
from ..params import get
from ..train import distributed as ddp

# params key -> (input modality, output file name)
OUTPUTS = {
    "image": ("image", "image.parquet"),
    "text": ("text", "text.parquet"),
    "image_tokens": ("image", "image_tokens.arrow"),
    "text_tokens": ("text", "text_tokens.arrow"),
}


def output_path(dataset: str, modality: str, root: str | Path = "data/features") -> Path:
    return Path(root) / dataset / OUTPUTS[modality][1]


def for_dataset(entry: dict, dataset: str, key: str) -> dict:
    """``entry`` with its ``datasets.<dataset>`` overrides applied (``datasets`` itself removed): e.g. the synthetic
    catalogue's 96-px images are encoded at their native size instead of being upscaled to 224."""
    if not isinstance(entry, dict):
        raise ParamError(key, f"must be a mapping with at least `family`, got {entry!r}")
    entry = dict(entry)
    per_dataset = entry.pop("datasets", None) or {}
    if not isinstance(per_dataset, dict):
        raise ParamError(f"{key}.datasets", f"must map dataset names to encoder options, got {per_dataset!r}")
    override = per_dataset.get(dataset) or {}
    if not isinstance(override, dict):
        raise ParamError(f"{key}.datasets.{dataset}", f"must be a mapping of encoder options, got {override!r}")
    return {**entry, **override}


def run(params: dict, modality: str, dataset: str | None = None, prepared_root: str | Path = "data/prepared",
        features_root: str | Path = "data/features", progress: bool = True) -> Path:
    """Encode ``modality`` (image | text | image_tokens | text_tokens) of ``dataset`` (default ``base.dataset``)."""
    if modality not in OUTPUTS:
        raise ParamError("encode", f"unknown modality {modality!r}; one of {sorted(OUTPUTS)}")
    ds = dataset or get(params, "base.dataset")
    key = f"encode.{modality}"
    cfg = EncoderConfig.from_params(for_dataset(get(params, key), ds, key), key)
    kind, _ = OUTPUTS[modality]
    if (cfg.pooling == "tokens") != modality.endswith("_tokens"):
        raise ParamError(f"{key}.pooling", "the token caches (image_tokens, text_tokens) need pooling: tokens; the "
                                           "pooled caches (image, text) any other pooling")
    items_path = Path(prepared_root) / ds / "items.parquet"
    if not items_path.is_file():
        raise DataError("prepared items not found (run the prepare stage first)", path=items_path)
    if cfg.nproc > 1 and not ddp.under_launcher():  # encode.<m>.nproc: K data-parallel processes, one cache
        return ddp.launch(cfg.nproc, run, params, modality, ds, prepared_root, features_root, progress)
    ddp.setup(pick_device(cfg.device))
    items = pl.read_parquet(items_path)
    out = output_path(ds, modality, features_root)
    summary = encode_catalogue(items, cfg, kind, out, key=key, source=items_path,
                               extra_meta={"dataset": ds, "params_key": key}, progress=progress)
    if ddp.is_main():
        print(f"{summary.line(key)} | wall {wall_seconds():.1f} s")
    return out
