"""Encode a prepared item catalogue with one encoder and write its cache (pooled Parquet or token Arrow file).

Pure library code (no DVC): :func:`encode_catalogue` takes the items table, an :class:`EncoderConfig` and an output
path. Items without an input get a zero vector and ``has_feature = False``; unreadable images are counted, listed
in the metadata (first 20) and reported, never fatal.

Under a process group (``encode.<m>.nproc`` > 1 or torchrun; :mod:`modalrec.train.distributed`) rank r encodes the
batches r, r + K, ... of the single-process batching (so every vector is the one a single process computes), in
lockstep: after each round the ranks' results are gathered to rank 0, which alone writes the one cache. Memory on
rank 0 stays at K batches plus the cache being written.
"""

from __future__ import annotations

import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import DataError, ParamError
from ..train import distributed as ddp
from .cache import TokenWriter, write_features
from .images import UNREADABLE, load_image
from .registry import Encoder, EncoderConfig, build_encoder, sha256_files
from .text import Template

NON_TEXT_COLUMNS = {"item", "item_orig", "image_path", "image_bytes"}


@dataclass
class EncodeSummary:
    path: Path
    n_items: int
    n_encoded: int
    n_missing: int
    n_unreadable: int
    seconds: float               # encoding time (model loading excluded)
    load_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.n_encoded / max(self.seconds, 1e-9)

    def line(self, key: str) -> str:
        return (f"{key}: {self.n_items} items, {self.n_encoded} encoded, {self.n_missing} missing, "
                f"{self.n_unreadable} unreadable in {self.seconds:.1f} s ({self.items_per_s:.1f} items/s; model load "
                f"{self.load_seconds:.1f} s) -> {self.path}")


def text_fields(items: pl.DataFrame) -> list[str]:
    return [c for c, t in items.schema.items() if c not in NON_TEXT_COLUMNS and t in (pl.String, pl.Utf8)]


def check_items(items: pl.DataFrame, source: str | Path) -> int:
    if "item" not in items.columns:
        raise DataError("items table has no `item` column", path=source)
    ids = items["item"].to_numpy()
    if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
        raise DataError("items must be exactly 1..N sorted by `item`", path=source, column="item")
    return len(ids)


def render_texts(items: pl.DataFrame, cfg: EncoderConfig, key: str) -> tuple[list[str | None], list[str]]:
    """Each item's text (None when it has none) and the template fields this dataset lacks (skipped)."""
    tpl = Template.parse(cfg.template, f"{key}.template")
    absent = tpl.check_fields(text_fields(items), f"{key}.template")
    if absent:
        warnings.warn(f"{key}.template: this dataset has no {absent} field(s); they are skipped", stacklevel=2)
        tpl = tpl.without(absent)
    cols = {f: items[f].to_list() for f in tpl.fields}
    return [tpl.render({f: cols[f][i] for f in tpl.fields}, cfg.lowercase) for i in range(len(items))], absent


class _Images(Dataset):
    """Decodes and transforms one image per index; unreadable images come back as None (counted by the caller)."""

    def __init__(self, rows: list[int], paths: list, blobs: list, transform):
        self.rows, self.paths, self.blobs, self.transform = rows, paths, blobs, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        r = self.rows[k]
        try:
            img = load_image(self.paths[r], self.blobs[r])
            return r, self.transform(img)
        except UNREADABLE as e:
            return r, f"{self.paths[r] or '<image_bytes>'}: {type(e).__name__}: {e}"


def _collate(batch):
    return batch


def encode_catalogue(items: pl.DataFrame, cfg: EncoderConfig, kind: str, out: str | Path, key: str = "encode",
                     source: str | Path = "items.parquet", extra_meta: dict[str, Any] | None = None,
                     encoder: Encoder | None = None, progress: bool = True) -> EncodeSummary:
    """Encode every item's ``kind`` ("image" | "text") and write the cache at ``out`` (``.arrow`` for tokens)."""
    if kind not in ("image", "text"):
        raise ParamError(key, f"modality must be image or text, got {kind!r}")
    n = check_items(items, source)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    enc = encoder or build_encoder(cfg, kind, key)
    load_s = time.perf_counter() - t0
    out = Path(out)
    if enc.tokens and out.suffix != ".arrow":
        raise ParamError(f"{key}.pooling", f"pooling 'tokens' writes a token cache (.arrow), not {out.name}")
    if not enc.tokens and out.suffix != ".parquet":
        raise ParamError(f"{key}.pooling", f"{out.name} is a token cache; set pooling: tokens")

    unreadable: list[str] = []
    absent_fields: list[str] = []
    t1 = time.perf_counter()
    rank, world = ddp.world()
    main = rank == 0
    vectors = np.zeros((n, enc.dim), dtype=np.float32) if not enc.tokens else None
    has = np.zeros(n, dtype=bool)
    writer = TokenWriter(out, n, enc.n_tokens, enc.dim) if enc.tokens and main else None

    def as_numpy(result):
        if enc.tokens:
            tok, mask = result
            return tok.float().cpu().numpy(), mask.cpu().numpy()
        return result.float().cpu().numpy()

    def store(rows: list[int], result) -> None:
        rows_a = np.asarray(rows)
        has[rows_a] = True
        if enc.tokens:
            if writer is not None:
                writer.write(rows_a + 1, *result)
        else:
            vectors[rows_a] = result

    def consume(batches, n_chunks: int) -> None:
        """Store ``(rows, result | None, unreadable)`` per batch; with K ranks, each round's K batches (chunks
        ``round * K + r``) are gathered to rank 0 in rank order, which is the single-process order."""
        if world == 1:
            for rows_b, result, bad in batches:
                unreadable.extend(bad)
                if result is not None:
                    store(rows_b, as_numpy(result))
            return
        it = iter(batches)
        for _ in range(-(-n_chunks // world)):
            mine = next(it, None)
            payload = None if mine is None else (mine[0], None if mine[1] is None else as_numpy(mine[1]), mine[2])
            for p in ddp.gather(payload) or []:  # (rank 0 only)
                if p is not None:
                    unreadable.extend(p[2])
                    if p[1] is not None:
                        store(p[0], p[1])

    try:
        if enc.lookup is not None:                                   # precomputed vectors
            vectors[:], has[:] = enc.lookup(items["item_orig"].cast(pl.String).to_list())
            n_input = int(has.sum())
        elif kind == "text":
            texts, absent_fields = render_texts(items, cfg, key)
            rows = [i for i, t in enumerate(texts) if t is not None]
            n_input = len(rows)
            if cfg.pooling != "mean_unmasked":
                # Longest first: batches pad less (faster) and an OOM shows up in the first batch. Stable, so
                # deterministic. KDSR's unmasked mean depends on padding, so its parity mode keeps item order.
                rows.sort(key=lambda i: -len(texts[i]))
            chunks = [rows[s:s + cfg.batch_size] for s in range(0, len(rows), cfg.batch_size)]
            bar = tqdm(total=len(rows), desc=key, unit="item", disable=not progress or not main)

            def text_batches():
                for chunk in chunks[rank::world]:
                    yield chunk, enc.forward([texts[i] for i in chunk]), []
                    bar.update(len(chunk) * world)

            consume(text_batches(), len(chunks))
            bar.close()
        else:
            for col in ("image_path", "image_bytes"):
                if col not in items.columns:
                    items = items.with_columns(pl.lit(None).alias(col))
            paths, blobs = items["image_path"].to_list(), items["image_bytes"].to_list()
            rows = [i for i in range(n) if paths[i] is not None or blobs[i] is not None]
            n_input = len(rows)
            chunks = [rows[s:s + cfg.batch_size] for s in range(0, len(rows), cfg.batch_size)]
            mine = [r for chunk in chunks[rank::world] for r in chunk]  # re-batched: the same chunks
            loader = DataLoader(_Images(mine, paths, blobs, enc.transform), batch_size=cfg.batch_size,
                                num_workers=cfg.num_workers, collate_fn=_collate)
            bar = tqdm(total=len(rows), desc=key, unit="img", disable=not progress or not main)

            def image_batches():
                for batch in loader:
                    ok = [(r, x) for r, x in batch if not isinstance(x, str)]
                    bad = [x for _, x in batch if isinstance(x, str)]
                    yield [r for r, _ in ok], enc.forward(torch.stack([x for _, x in ok])) if ok else None, bad
                    bar.update(len(batch) * world)

            consume(image_batches(), len(chunks))
            bar.close()
        seconds = time.perf_counter() - t1

        n_missing = n - n_input
        meta = {
            "family": cfg.family, "weights": enc.weights_id,
            "weights_sha256": sha256_files(enc.weights_files),
            "pooling": enc.pooling, "modality": kind,
            "template": cfg.template if kind == "text" else None, "template_absent_fields": absent_fields,
            "max_length": cfg.max_length if kind == "text" else None,
            "preprocessing": enc.preprocessing, "n_missing": n_missing, "n_unreadable": len(unreadable),
            "unreadable": unreadable[:20], "encoder": cfg.as_dict(), **enc.extra_meta,
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            **(extra_meta or {}),
        }
        if writer is not None:
            writer.close(meta)
        elif main and not enc.tokens:
            write_features(out, vectors, has, meta, dtype=cfg.dtype)
    except BaseException:
        if writer is not None and hasattr(writer, "tokens"):
            writer.discard()
        raise
    if unreadable:
        warnings.warn(f"{key}: {len(unreadable)} unreadable image(s) got zero vectors, e.g. {unreadable[0]}",
                      stacklevel=2)
    return EncodeSummary(out, n, int(has.sum()), n_missing, len(unreadable), seconds, load_s, meta)

